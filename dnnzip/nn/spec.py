"""Module trees as JSON, so artifacts reload without unpickling.

A compressed model is its zoo model (rebuilt from name + kwargs) with some submodules replaced or
resized: a pruned ``Conv2d`` has fewer channels, a quantized ``Linear`` became a ``QuantLinear``, a
factorized layer became a ``Sequential`` of two ``Linear``s. ``describe(model)`` records every
module's class (from an allow-list) and constructor arguments; ``rebuild_into(base, spec)`` walks
the freshly built base model and replaces each submodule whose recorded class or arguments differ.
Only classes registered here can be built, so a manifest cannot name arbitrary code.

A custom module joins with ``@spec_module("name")`` and a ``spec_kwargs(self) -> dict`` method
returning JSON-able constructor arguments (its children are recorded separately).
"""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from dnnzip.errors import FormatError

_BUILDERS: dict[str, type] = {}
_KWARGS: dict[type, Callable[[nn.Module], dict[str, Any]]] = {}


def spec_module(name: str, kwargs_fn: Callable[[nn.Module], dict] | None = None) -> Callable:
    """Class decorator registering a module class as rebuildable under ``name``."""

    def deco(cls: type) -> type:
        _BUILDERS[name] = cls
        cls._spec_name = name
        if kwargs_fn is not None:
            _KWARGS[cls] = kwargs_fn
        return cls

    return deco


def conv_kwargs(m: nn.Module) -> dict:
    """Constructor arguments of a Conv1d/Conv2d (also for subclasses such as masked convs)."""
    return dict(in_channels=m.in_channels, out_channels=m.out_channels,
                kernel_size=list(m.kernel_size), stride=list(m.stride),
                padding=m.padding if isinstance(m.padding, str) else list(m.padding),
                dilation=list(m.dilation), groups=m.groups, bias=m.bias is not None,
                padding_mode=m.padding_mode)


def _bn_kwargs(m: nn.Module) -> dict:
    return dict(num_features=m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine,
                track_running_stats=m.track_running_stats)


def _rnn_kwargs(m: nn.Module) -> dict:
    kw = dict(input_size=m.input_size, hidden_size=m.hidden_size, num_layers=m.num_layers,
              bias=m.bias, batch_first=m.batch_first, dropout=m.dropout,
              bidirectional=m.bidirectional)
    if isinstance(m, nn.LSTM) and m.proj_size:
        kw["proj_size"] = m.proj_size
    return kw


def _pool_kwargs(m: nn.Module) -> dict:
    def norm(v):
        return list(v) if isinstance(v, tuple) else v
    kw = dict(kernel_size=norm(m.kernel_size), stride=norm(m.stride), padding=norm(m.padding),
              ceil_mode=m.ceil_mode)
    if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)):
        kw["dilation"] = norm(m.dilation)
    return kw


def _none(m: nn.Module) -> dict:
    return {}


_TORCH: dict[str, tuple[type, Callable]] = {
    "Conv1d": (nn.Conv1d, conv_kwargs),
    "Conv2d": (nn.Conv2d, conv_kwargs),
    "Linear": (nn.Linear, lambda m: dict(in_features=m.in_features, out_features=m.out_features,
                                         bias=m.bias is not None)),
    "BatchNorm1d": (nn.BatchNorm1d, _bn_kwargs),
    "BatchNorm2d": (nn.BatchNorm2d, _bn_kwargs),
    "LayerNorm": (nn.LayerNorm, lambda m: dict(normalized_shape=list(m.normalized_shape),
                                               eps=m.eps,
                                               elementwise_affine=m.elementwise_affine)),
    "GRU": (nn.GRU, _rnn_kwargs),
    "LSTM": (nn.LSTM, _rnn_kwargs),
    "ReLU": (nn.ReLU, _none),
    "ReLU6": (nn.ReLU6, _none),
    "GELU": (nn.GELU, lambda m: dict(approximate=m.approximate)),
    "Tanh": (nn.Tanh, _none),
    "Sigmoid": (nn.Sigmoid, _none),
    "Hardtanh": (nn.Hardtanh, lambda m: dict(min_val=m.min_val, max_val=m.max_val)),
    "Identity": (nn.Identity, _none),
    "Flatten": (nn.Flatten, lambda m: dict(start_dim=m.start_dim, end_dim=m.end_dim)),
    "Dropout": (nn.Dropout, lambda m: dict(p=m.p)),
    "MaxPool1d": (nn.MaxPool1d, _pool_kwargs),
    "MaxPool2d": (nn.MaxPool2d, _pool_kwargs),
    "AvgPool1d": (nn.AvgPool1d, _pool_kwargs),
    "AvgPool2d": (nn.AvgPool2d, _pool_kwargs),
    "AdaptiveAvgPool1d": (nn.AdaptiveAvgPool1d, lambda m: dict(output_size=m.output_size)),
    "AdaptiveAvgPool2d": (nn.AdaptiveAvgPool2d,
                          lambda m: dict(output_size=list(m.output_size)
                                         if isinstance(m.output_size, tuple) else m.output_size)),
    "Sequential": (nn.Sequential, _none),
    "ModuleList": (nn.ModuleList, _none),
    "ModuleDict": (nn.ModuleDict, _none),
}
_TORCH_BY_CLS = {cls: (name, fn) for name, (cls, fn) in _TORCH.items()}


def _class_name_and_kwargs(m: nn.Module) -> tuple[str, dict] | None:
    cls = type(m)
    if cls in _TORCH_BY_CLS:
        name, fn = _TORCH_BY_CLS[cls]
        return "torch." + name, fn(m)
    spec_name = getattr(cls, "_spec_name", None)
    if spec_name is not None and _BUILDERS.get(spec_name) is cls:
        fn = _KWARGS.get(cls) or getattr(m, "spec_kwargs", None)
        kwargs = fn(m) if cls in _KWARGS else (fn() if fn is not None else {})
        return spec_name, kwargs
    return None


def describe(model: nn.Module) -> dict[str, Any]:
    """The JSON-able tree {"cls", "kwargs", "children"} of ``model``.

    A module whose class is not registered (e.g. the zoo model's own top-level class) is recorded
    with ``cls: null``: it must already exist in the rebuilt base model.
    """
    info = _class_name_and_kwargs(model)
    node: dict[str, Any] = {"cls": info[0] if info else None, "kwargs": info[1] if info else {}}
    children = {name: describe(child) for name, child in model.named_children()}
    if children:
        node["children"] = children
    return node


def check_node(node: Any, where: str) -> None:
    """A node is {"cls": str | None, "kwargs": {...}, "children": {str: node}} and nothing else."""
    if not isinstance(node, dict) or set(node) - {"cls", "kwargs", "children"} \
            or not isinstance(node.get("cls"), (str, type(None))) \
            or not isinstance(node.get("kwargs", {}), dict) \
            or not isinstance(node.get("children", {}), dict) \
            or not all(isinstance(k, str) for k in node.get("children", {})):
        raise FormatError(f"module spec at '{where}' must be an object with 'cls' (string or "
                          "null), 'kwargs' (object) and optional 'children' (object of nodes)")


def build_module(node: dict[str, Any], where: str = "<root>") -> nn.Module:
    """Build a module (and its children) from its recorded node."""
    check_node(node, where)
    name = node.get("cls")
    kwargs = node.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise FormatError(f"module spec at '{where}': kwargs must be an object")
    if name is None:
        raise FormatError(f"module spec at '{where}' names no class and the base model lacks it")
    if isinstance(name, str) and name.startswith("torch.") and name[6:] in _TORCH:
        cls = _TORCH[name[6:]][0]
    elif name in _BUILDERS:
        cls = _BUILDERS[name]
    else:
        raise FormatError(
            f"module spec at '{where}' names class {name!r}, which is not registered; "
            "import the plug-in that defines it (dnnzip.nn.spec_module) before loading"
        )
    kwargs = {k: (tuple(v) if isinstance(v, list) and k not in ("normalized_shape",) else v)
              for k, v in kwargs.items()}
    try:
        module = cls(**kwargs)
    except Exception as exc:  # constructor rejected recorded arguments
        raise FormatError(f"module spec at '{where}': cannot build {name}({kwargs}): {exc}") from exc
    children = node.get("children") or {}
    existing = dict(module.named_children())
    for child_name, child_node in children.items():
        child = build_module(child_node, f"{where}.{child_name}")
        _set_child(module, child_name, child, existing)
    return module


def _set_child(parent: nn.Module, name: str, child: nn.Module, existing: dict) -> None:
    if isinstance(parent, (nn.Sequential, nn.ModuleList)) and name not in existing:
        parent.append(child) if isinstance(parent, nn.ModuleList) else parent.add_module(name, child)
    else:
        setattr(parent, name, child) if not isinstance(parent, nn.ModuleDict) else parent.update({name: child})


def _same(a: dict, b: dict) -> bool:
    return a.get("cls") == b.get("cls") and _norm(a.get("kwargs")) == _norm(b.get("kwargs"))


def _norm(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()}
    return v


def rebuild_into(base: nn.Module, spec: dict[str, Any], where: str = "") -> nn.Module:
    """Make ``base`` match the recorded tree ``spec``; returns the (possibly replaced) module."""
    check_node(spec, where or "<root>")
    current = describe(base)
    if spec.get("cls") is not None and not _same(current, spec):
        return build_module(spec, where or "<root>")
    children = spec.get("children") or {}
    have = dict(base.named_children())
    for name in list(have):
        if name not in children:
            delattr(base, name) if not isinstance(base, nn.Sequential) else base._modules.pop(name)
    for name, child_spec in children.items():
        path = f"{where}.{name}" if where else name
        if name in have:
            new = rebuild_into(have[name], child_spec, path)
            if new is not have[name]:
                _set_child(base, name, new, have)
        else:
            _set_child(base, name, build_module(child_spec, path), have)
    return base
