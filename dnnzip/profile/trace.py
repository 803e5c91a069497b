"""One traced forward pass: which module or functional op ran, on which tensors.

``trace(model, example)`` runs ``model(example)`` once under ``torch.no_grad`` with

- a forward pre-hook and hook on every module (a stack of the modules being executed), and
- a ``TorchFunctionMode`` that sees every torch function called from Python.

A call is *atomic* when it is a leaf module, a module with a MAC rule (``Conv*``, ``Linear``,
``RNN``/``GRU``/``LSTM``, ``MultiheadAttention``; see ``counts.RULES``), or a torch function
called while no atomic module is running (``x + skip``, ``torch.flatten``, ``F.linear`` in a custom
module's own ``forward``). Everything that happens inside an atomic module is hidden: its internal
temporaries are not activations of the network. Each atomic call becomes one ``Event`` carrying
its inputs and outputs; ``counts.py`` turns events into MACs and ``memory.py`` into a liveness
estimate.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

# Tensor methods that only read metadata; they produce no activation and are not recorded.
_IGNORED = {"size", "dim", "shape", "dtype", "device", "numel", "__len__", "__get__", "is_floating_point",
            "requires_grad", "data_ptr", "untyped_storage", "stride", "ndim", "is_contiguous",
            "__format__", "__repr__", "__bool__", "item", "tolist", "__hash__", "__iter__", "__index__",
            "__int__", "__float__", "type", "names"}


@dataclass
class Event:
    """One atomic call. ``module`` is the module (None for a functional op outside any)."""

    name: str             # module name ("" is the root), or "<module>.<op>" for a functional op
    kind: str             # "module", "function" (outside atomic modules) or "inner"
    module: nn.Module | None
    func: Any
    args: tuple
    kwargs: dict
    output: Any


@dataclass
class Trace:
    events: list[Event] = field(default_factory=list)
    inputs: tuple = ()
    output: Any = None
    batch: int = 1
    weight_storages: set[int] = field(default_factory=set)
    modules: dict[int, str] = field(default_factory=dict)  # id(module) -> qualified name


def tensors_in(obj: Any) -> list[torch.Tensor]:
    """All tensors in a (nested) tuple/list/dict/PackedSequence, in order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, nn.utils.rnn.PackedSequence):
        return [obj.data]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in tensors_in(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in tensors_in(o)]
    return []


def first_tensor(obj: Any) -> torch.Tensor | None:
    ts = tensors_in(obj)
    return ts[0] if ts else None


def storage_key(t: torch.Tensor) -> int:
    """Identity of a tensor's memory (views share it)."""
    try:
        return t.untyped_storage().data_ptr() or id(t)
    except (RuntimeError, NotImplementedError):
        return id(t)


def _func_name(func: Any) -> str:
    return getattr(func, "__name__", None) or str(func)


class _Mode(TorchFunctionMode):
    def __init__(self, tracer: "_Tracer"):
        super().__init__()
        self.tracer = tracer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.tracer.on_function(func, args, kwargs, out)
        return out


class _Tracer:
    def __init__(self, model: nn.Module, is_atomic: Callable[[nn.Module], bool],
                 is_rule: Callable[[nn.Module], bool]):
        self.model = model
        self.is_atomic = is_atomic
        self.is_rule = is_rule
        self.stack: list[tuple[str, nn.Module]] = []
        self.atomic_depth = 0
        self.rule_depth = 0
        self.owner: tuple[str, nn.Module] | None = None
        self.trace = Trace()
        self.counter: dict[str, int] = {}

    def pre(self, name: str):
        def hook(module, args, kwargs):
            self.stack.append((name, module))
            if self.is_atomic(module):
                if self.atomic_depth == 0:
                    self.owner = (name, module)
                self.atomic_depth += 1
            if self.is_rule(module):
                self.rule_depth += 1
        return hook

    def post(self, name: str):
        def hook(module, args, kwargs, output):
            if self.stack and self.stack[-1][1] is module:
                self.stack.pop()
            if self.is_rule(module):
                self.rule_depth -= 1
            if self.is_atomic(module):
                self.atomic_depth -= 1
                if self.atomic_depth == 0:
                    self.trace.events.append(
                        Event(name, "module", module, None, tuple(args), dict(kwargs), output))
        return hook

    def on_function(self, func, args, kwargs, out):
        if self.rule_depth > 0 or _func_name(func) in _IGNORED or not tensors_in(out):
            return
        if self.atomic_depth > 0:  # inside a leaf without a MAC rule: its ops count for it
            name, module = self.owner
            self.trace.events.append(Event(name, "inner", module, func, tuple(args), dict(kwargs), out))
            return
        owner = self.stack[-1][0] if self.stack else ""
        module = self.stack[-1][1] if self.stack else None
        base = f"{owner}.{_func_name(func)}" if owner else _func_name(func)
        self.trace.events.append(Event(base, "function", module, func, tuple(args), dict(kwargs), out))


def trace(model: nn.Module, example: Any, *, is_atomic: Callable[[nn.Module], bool],
          is_rule: Callable[[nn.Module], bool], batch: int | None = None) -> Trace:
    """Run ``model(example)`` once and record its atomic calls (see module docstring).

    Torch functions run inside an atomic module without a rule (a custom leaf such as a masked
    or quantized linear) are recorded as ``"inner"`` events of that module: they carry its MACs
    but are not network activations."""
    tracer = _Tracer(model, is_atomic, is_rule)
    handles = []
    names = {}
    for name, module in model.named_modules():
        names[id(module)] = name
        handles.append(module.register_forward_pre_hook(tracer.pre(name), with_kwargs=True))
        handles.append(module.register_forward_hook(tracer.post(name), with_kwargs=True))
    inputs = example if isinstance(example, tuple) else (example,)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad(), _Mode(tracer):
            output = model(*inputs)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:  # each module's own flag (e.g. a frozen BatchNorm)
            m.training = training
    tr = tracer.trace
    tr.inputs, tr.output, tr.modules = inputs, output, names
    tr.weight_storages = {storage_key(t) for t in list(model.parameters()) + list(model.buffers())}
    if batch is None:
        first = first_tensor(inputs)
        batch = int(first.shape[0]) if first is not None and first.dim() > 0 else 1
    tr.batch = max(1, batch)
    return tr
