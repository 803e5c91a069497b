"""Activation and weight memory, estimated from one traced forward pass.

Definition of the peak (``peak_bytes``): the atomic calls of the trace (``trace.py``: modules with
a MAC rule, leaf modules, and torch functions between them such as a residual ``add``) run in
order; an activation buffer (identified by its storage, so views such as ``flatten`` share it) is
live from the call that first produces or reads it until the last call that reads it (the model's
inputs are live from the start, its outputs until the end). The peak is the largest sum of live
buffer bytes during any call, i.e. what an executor that frees each buffer right after its last
consumer needs. Parameters and buffers are weights, not activations. Temporaries inside one leaf
module are not seen, and no buffer reuse beyond that rule is assumed, so this is an *estimate*.

``layer_peak_bytes`` is the simpler bound "max over calls of input + output bytes", reported
alongside because it is what many MCU tools (e.g. TFLite Micro's arena planner, lower bound) quote.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from dnnzip.profile.counts import LayerCount
from dnnzip.profile.trace import Trace, storage_key, tensors_in


@dataclass(frozen=True)
class MemoryEstimate:
    peak_bytes: int          # liveness peak (module docstring)
    layer_peak_bytes: int    # max over calls of input + output bytes
    peak_at: str             # the call during which the peak occurs
    batch: int               # batch size of the traced example; bytes are for this batch
    how: str = "estimated"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _storages(obj: Any, weights: set[int]) -> dict[int, int]:
    out = {}
    for t in tensors_in(obj):
        key = storage_key(t)
        if key in weights:
            continue
        try:
            out[key] = t.untyped_storage().nbytes()
        except (RuntimeError, NotImplementedError):
            out[key] = t.numel() * t.element_size()
    return out


def activation_memory(tr: Trace) -> MemoryEstimate:
    """Peak activation bytes of the traced pass (module docstring)."""
    events = [e for e in tr.events if e.kind != "inner"]
    size: dict[int, int] = {}
    birth: dict[int, int] = {}
    death: dict[int, int] = {}
    for key, nbytes in _storages(tr.inputs, tr.weight_storages).items():
        size[key], birth[key], death[key] = nbytes, -1, -1
    layer_peak = 0
    for i, ev in enumerate(events):
        ins = _storages((ev.args, ev.kwargs), tr.weight_storages)
        outs = _storages(ev.output, tr.weight_storages)
        layer_peak = max(layer_peak, sum(ins.values()) + sum(outs.values()))
        for key, nbytes in {**ins, **outs}.items():
            size[key] = max(size.get(key, 0), nbytes)
            birth.setdefault(key, i)
            death[key] = i
    end = len(events)
    for key in _storages(tr.output, tr.weight_storages):
        death[key] = end
    delta = [0] * (end + 3)  # index i + 1 for call i; -1 (inputs) .. end (outputs)
    for key, nbytes in size.items():
        delta[birth[key] + 1] += nbytes
        delta[death[key] + 2] -= nbytes
    peak, peak_at, live = 0, "", 0
    for i in range(-1, end + 1):
        live += delta[i + 1]
        if live > peak:
            peak = live
            peak_at = events[i].name if 0 <= i < end else ("<input>" if i < 0 else "<output>")
    return MemoryEstimate(peak, layer_peak, peak_at, tr.batch)


def weight_bytes(model: nn.Module) -> int:
    """Bytes of all parameters and persistent buffers as held in memory (shared ones once)."""
    seen: set[int] = set()
    total = 0
    tensors = list(model.parameters()) + [b for b in model.buffers()]
    for t in tensors:
        if id(t) in seen:
            continue
        seen.add(id(t))
        total += t.numel() * t.element_size()
    return total


def weight_bytes_at_bits(rows: list[LayerCount]) -> int:
    """Bytes of the counted layers' weights at each layer's ``weight_bits`` (dense storage)."""
    return sum((r.params * r.weight_bits + 7) // 8 for r in rows)
