"""Parameters and multiply-accumulates (MACs), per layer, from one traced forward pass.

Conventions (all figures are *counted*, per sample: totals are divided by the batch size):

- A MAC is one multiply plus one add of a dot product. Conv: ``N * prod(out spatial) *
  weight.numel()`` (``weight.numel() = C_out * C_in/groups * prod(kernel)``). Linear: rows times
  ``in * out``. Element-wise ops, pooling, normalisation and activations count 0 MACs.
- RNN/GRU/LSTM: for every layer and direction, every time step does the input matmul
  ``G*H x I`` and the hidden matmul ``G*H x H`` (G = 1 RNN, 3 GRU, 4 LSTM; plus ``P x H`` for an
  LSTM projection), i.e. ``steps * (w_ih.numel() + w_hh.numel() [+ w_hr.numel()])``. The O(H)
  gate products are not counted.
- MultiheadAttention: the Q/K/V and output projections plus ``QK^T`` and ``AV``
  (``L*S*E`` each). Functional ``matmul``/``bmm``/``mm``/``F.linear``/``F.conv*``/
  ``scaled_dot_product_attention`` called outside these modules are counted where they run (also
  inside a custom leaf module, e.g. a quantized layer calling ``F.linear``); ``einsum`` and other
  ops count 0 MACs.
- ``macs_effective`` scales each weight's MACs by its fraction of non-zero entries: connection
  pruning keeps zeros in place (masks), so a sparse engine skips them (Han et al. 2015; survey
  Sec. III-A). A module's effective weight is ``module.effective_weight()`` if it defines one,
  else ``module.weight_float()`` (dnnzip.quant layers), else ``weight * weight_mask`` if it has a
  ``weight_mask`` buffer, else ``weight``. A ``weight``/``bias`` kept in a buffer (integer codes)
  counts as a parameter.
- ``weight_bits``: a module's ``weight_bits`` attribute (custom quantized modules set it), else the
  bit width of its weight dtype (32 for float32).
"""
from __future__ import annotations

import math

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dnnzip.profile.trace import Event, Trace, first_tensor, tensors_in, trace


@dataclass
class LayerCount:
    """One row of the per-layer table. MACs and elements are per sample."""

    name: str
    type: str
    params: int
    params_nonzero: int
    macs_dense: int
    macs_effective: int
    weight_bits: int
    output_elements: int
    input_elements: int
    calls: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


RULE_TYPES: tuple[type, ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
                                nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear, nn.RNNBase,
                                nn.MultiheadAttention)


def has_rule(module: nn.Module) -> bool:
    return isinstance(module, RULE_TYPES)


def is_atomic(module: nn.Module) -> bool:
    """Counted as one unit: a leaf module or a module with a MAC rule."""
    return isinstance(module, RULE_TYPES) or next(module.children(), None) is None


_EFFECTIVE = ("effective_weight", "weight_float")  # the latter: dnnzip.quant layers


def effective_weight(module: nn.Module, name: str = "weight") -> torch.Tensor | None:
    """The weight a pruned/quantized module really multiplies with (see module docstring)."""
    if name == "weight":
        for attr in _EFFECTIVE:
            if callable(getattr(module, attr, None)):
                return getattr(module, attr)().detach()
    w = getattr(module, name, None)
    if not isinstance(w, torch.Tensor):
        return None
    mask = getattr(module, f"{name}_mask", None)
    if isinstance(mask, torch.Tensor) and mask.shape == w.shape:
        w = w * mask
    return w.detach()


def _density(w: torch.Tensor | None) -> float:
    if w is None or w.numel() == 0:
        return 1.0
    return float(torch.count_nonzero(w)) / w.numel()


def _bits(module: nn.Module | None, w: torch.Tensor | None = None) -> int:
    bits = getattr(module, "weight_bits", None) if module is not None else None
    if isinstance(bits, (int, float)) and not isinstance(bits, bool):
        return int(bits)
    if w is None and module is not None:
        w = getattr(module, "weight", None)
    if isinstance(w, torch.Tensor):
        return w.element_size() * 8 if not w.is_complex() else w.element_size() * 4
    return 32


def _own_params(module: nn.Module, seen: set[int]) -> tuple[int, int]:
    """(total, non-zero) of ``module``'s own parameters not in ``seen``; its effective weight
    stands for ``weight``. A ``weight``/``bias`` held in a buffer (quantized modules keep integer
    codes there) counts as a parameter; other buffers (BatchNorm statistics) do not."""
    total = nonzero = 0
    tensors = dict(module.named_parameters(recurse=False))
    for bname in ("weight", "bias"):
        b = module._buffers.get(bname)
        if isinstance(b, torch.Tensor) and bname not in tensors:
            tensors[bname] = b
    for pname, p in tensors.items():
        if id(p) in seen:
            continue
        seen.add(id(p))
        w = effective_weight(module, pname)
        total += p.numel()
        nonzero += int(torch.count_nonzero(w if w is not None and w.shape == p.shape else p.detach()))
    return total, nonzero


def module_params(module: nn.Module, *, recurse: bool = True) -> tuple[int, int]:
    """(total, non-zero) parameters of ``module`` (and its children if ``recurse``)."""
    seen: set[int] = set()
    mods = module.modules() if recurse else [module]
    total = nonzero = 0
    for m in mods:
        t, nz = _own_params(m, seen)
        total, nonzero = total + t, nonzero + nz
    return total, nonzero


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, non-zero) parameters of ``model``; shared parameters are counted once."""
    return module_params(model)


# ---------------------------------------------------------------- per-event MAC rules
def _macs_of_weight(uses: int, w: torch.Tensor | None) -> tuple[int, float]:
    if w is None:
        return 0, 0.0
    dense = uses * w.numel()
    return dense, dense * _density(w)


def _conv_macs(module: nn.Module, x: torch.Tensor, out: torch.Tensor) -> tuple[int, float]:
    w = effective_weight(module)
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        # each input position is multiplied into C_out/groups * prod(kernel) outputs
        return _macs_of_weight(x.numel() // module.in_channels, w)
    return _macs_of_weight(out.numel() // module.out_channels, w)  # N * prod(out spatial)


def _rnn_steps(module: nn.RNNBase, x: Any) -> int:
    """Time steps times batch (sum over the batch of each sequence's length)."""
    if isinstance(x, nn.utils.rnn.PackedSequence):
        return int(x.batch_sizes.sum())
    if x.dim() == 2:  # unbatched (T, I)
        return x.shape[0]
    return x.shape[0] * x.shape[1]


def _rnn_macs(module: nn.RNNBase, x: Any) -> tuple[int, float]:
    steps = _rnn_steps(module, x)
    dense, eff = 0, 0.0
    for pname, _ in module.named_parameters():
        if pname.startswith("weight_"):
            d, e = _macs_of_weight(steps, effective_weight(module, pname))
            dense, eff = dense + d, eff + e
    return dense, eff


def _template_rnn_macs(template: nn.RNNBase, x: Any) -> tuple[int, float]:
    """A module that runs a weightless ``nn.GRU``/``nn.LSTM`` template on weights it computes
    (``quant.QuantRNN`` dequantizes codes, ``factor.LowRankGRU`` recomposes factors; the
    recomposition matmuls are counted as their own inner ops): the recurrence costs what the
    template's dense weights cost, per time step."""
    steps = _rnn_steps(template, x)
    dense = steps * sum(math.prod(getattr(template, n).shape)
                        for n in template._flat_weights_names if n.startswith("weight_"))
    return dense, float(dense)


def _mha_macs(module: nn.MultiheadAttention, args: tuple, kwargs: dict) -> tuple[int, float]:
    names = ("query", "key", "value")
    q, k, v = (args[i] if i < len(args) else kwargs.get(n) for i, n in enumerate(names))
    if q.dim() == 2:  # unbatched (L, E)
        n, L, S = 1, q.shape[0], k.shape[0]
    elif module.batch_first:
        n, L, S = q.shape[0], q.shape[1], k.shape[1]
    else:
        n, L, S = q.shape[1], q.shape[0], k.shape[0]
    E = module.embed_dim
    dense, eff = 0, 0.0
    if module.in_proj_weight is not None:
        w = effective_weight(module, "in_proj_weight")
        for rows, uses in ((w[:E], L), (w[E:2 * E], S), (w[2 * E:], S)):
            d, e = _macs_of_weight(n * uses, rows)
            dense, eff = dense + d, eff + e
    else:
        for pname, uses in (("q_proj_weight", L), ("k_proj_weight", S), ("v_proj_weight", S)):
            d, e = _macs_of_weight(n * uses, effective_weight(module, pname))
            dense, eff = dense + d, eff + e
    d, e = _macs_of_weight(n * L, effective_weight(module.out_proj))
    attn = 2 * n * L * S * E  # QK^T and AV over all heads
    return dense + d + attn, eff + e + attn


def _param_density(*ts: Any) -> float:
    for t in ts:
        if isinstance(t, nn.Parameter):
            return _density(t.detach())
    return 1.0


def _function_macs(ev: Event) -> tuple[int, float, torch.Tensor | None]:
    """MACs of a functional op; returns the weight-like operand for the bit width (or None)."""
    fname = getattr(ev.func, "__name__", "")
    a = ev.args
    out = first_tensor(ev.output)
    if out is None:
        return 0, 0.0, None
    if ev.func is F.linear:
        w = a[1] if len(a) > 1 else ev.kwargs["weight"]
        d, e = _macs_of_weight(out.numel() // max(1, w.shape[0]), w.detach())
        return d, e, w
    if ev.func in (F.conv1d, F.conv2d, F.conv3d):
        w = a[1] if len(a) > 1 else ev.kwargs["weight"]
        d, e = _macs_of_weight(out.numel() // max(1, w.shape[0]), w.detach())
        return d, e, w
    if fname in ("matmul", "__matmul__", "__rmatmul__", "bmm", "mm", "addmm", "baddbmm", "addbmm"):
        x, y = (a[1], a[2]) if fname.startswith(("add", "badd")) else (a[0], a[1])
        if fname == "__rmatmul__":
            x, y = y, x
        inner = x.shape[-1] if isinstance(x, torch.Tensor) and x.dim() else 1
        dense = out.numel() * inner if fname != "addbmm" else x.numel() * y.shape[-1]
        return dense, dense * _param_density(x, y), next(
            (t for t in (x, y) if isinstance(t, nn.Parameter)), None)
    if ev.func is F.scaled_dot_product_attention:
        q, k, v = a[:3]
        batch = q.numel() // (q.shape[-2] * q.shape[-1])
        dense = batch * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1])
        return dense, float(dense), None
    return 0, 0.0, None


def _event_count(ev: Event) -> tuple[int, float, int, nn.Module | None]:
    """(dense, effective, weight_bits, module whose params the row shows)."""
    m = ev.module
    if ev.kind == "module":
        x = ev.args[0] if ev.args else next(iter(ev.kwargs.values()), None)
        out = first_tensor(ev.output)
        if isinstance(m, (nn.modules.conv._ConvNd,)):
            d, e = _conv_macs(m, x, out)
        elif isinstance(m, nn.Linear):
            w = effective_weight(m)
            d, e = _macs_of_weight(out.numel() // max(1, m.out_features), w)
        elif isinstance(m, nn.RNNBase):
            d, e = _rnn_macs(m, x)
        elif isinstance(getattr(m, "_template", None), nn.RNNBase):
            d, e = _template_rnn_macs(m._template, x)
        elif isinstance(m, nn.MultiheadAttention):
            d, e = _mha_macs(m, ev.args, ev.kwargs)
        else:
            d, e = 0, 0.0
        return d, e, _bits(m), m
    d, e, w = _function_macs(ev)
    owner = m if ev.kind == "inner" else None
    return d, e, _bits(owner, w if isinstance(w, torch.Tensor) else None), owner


def _numel(obj: Any) -> int:
    t = first_tensor(obj)
    return t.numel() if t is not None else 0


def layer_counts(tr: Trace) -> list[LayerCount]:
    """Aggregate the events of a trace into per-layer rows (per sample)."""
    rows: dict[str, dict[str, Any]] = {}
    for ev in tr.events:
        d, e, bits, m = _event_count(ev)
        if ev.kind != "module" and d == 0:
            continue  # element-wise / shape ops: activations only (see memory.py)
        key = ev.name
        row = rows.get(key)
        if row is None:
            total, nz = module_params(m) if m is not None else (0, 0)
            rtype = type(m).__name__ if m is not None else getattr(ev.func, "__name__", "function")
            row = rows[key] = dict(name=key or type(m).__name__, type=rtype, params=total,
                                   params_nonzero=nz, macs_dense=0, macs_effective=0.0,
                                   weight_bits=bits, output_elements=0, input_elements=0,
                                   calls=0)
        row["macs_dense"] += d
        row["macs_effective"] += e
        if ev.kind != "inner":  # elements summed over calls (a module reused in a loop)
            row["calls"] += 1
            row["output_elements"] += _numel(ev.output)
            row["input_elements"] += sum(t.numel() for t in tensors_in(ev.args))
    b = tr.batch
    out = []
    for row in rows.values():
        row["macs_dense"] = int(round(row["macs_dense"] / b))
        row["macs_effective"] = int(round(row["macs_effective"] / b))
        row["output_elements"] = int(round(row["output_elements"] / b))
        row["input_elements"] = int(round(row["input_elements"] / b))
        out.append(LayerCount(**row))
    return out


def count_macs(model: nn.Module, example: Any, *, batch: int | None = None) -> list[LayerCount]:
    """Per-layer MACs of ``model`` on ``example`` (per sample; ``batch`` = the example's dim 0
    unless given). Sum ``macs_dense`` over the rows for the model's total."""
    return layer_counts(trace(model, example, is_atomic=is_atomic, is_rule=has_rule, batch=batch))


def total_macs(rows: list[LayerCount], *, effective: bool = False) -> int:
    return sum(r.macs_effective if effective else r.macs_dense for r in rows)
