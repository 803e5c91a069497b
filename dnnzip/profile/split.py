"""Where storage and compute sit: convolutional vs fully connected vs recurrent layers.

DeepEye (Mathur et al., MobiSys 2017; survey ref [75], Sec. IV "miscellaneous"): convolutional
layers are compute-heavy but small, fully connected layers are cheap to compute but hold most of
the weights, so the two call for different compression. ``split(rows)`` reports the shares and a
one-line recommendation. Recurrent and attention layers (not in DeepEye) are a third group.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from dnnzip.profile.counts import LayerCount

_CONV = ("Conv", "ConvTranspose")
_FC = ("Linear", "linear", "matmul", "bmm", "mm", "addmm")
_RNN = ("RNN", "GRU", "LSTM", "MultiheadAttention", "scaled_dot_product_attention")


def group_of(row: LayerCount) -> str:
    t = row.type
    if t.startswith(_CONV) or t.startswith("conv"):
        return "conv"
    if t in _RNN or t.endswith(("RNN", "GRU", "LSTM", "Attention")):
        return "recurrent"
    if t.endswith(_FC) or "Linear" in t:
        return "fc"
    return "other"


@dataclass(frozen=True)
class Split:
    params: dict[str, int]          # per group: parameters
    bytes: dict[str, int]           # per group: weight bytes at each layer's bit width
    macs: dict[str, int]            # per group: effective MACs
    recommendation: str
    how: str = "counted"

    def share(self, what: str, group: str) -> float:
        d = getattr(self, what)
        total = sum(d.values())
        return d.get(group, 0) / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_ADVICE = {
    ("storage", "fc"): "weight sharing / connection pruning / SVD of FC layers pays most",
    ("storage", "conv"): "quantization or channel pruning of conv layers shrinks the file most",
    ("storage", "recurrent"): "low-rank factorization / quantization of the recurrent gates pays most",
    ("macs", "conv"): "channel pruning / low-rank or depthwise factorization cuts latency",
    ("macs", "fc"): "pruning / factorizing FC layers cuts latency",
    ("macs", "recurrent"): "factorizing the gate matrices or a smaller hidden size cuts latency",
}


def split(rows: list[LayerCount]) -> Split:
    params: dict[str, int] = {}
    nbytes: dict[str, int] = {}
    macs: dict[str, int] = {}
    for r in rows:
        g = group_of(r)
        params[g] = params.get(g, 0) + r.params
        nbytes[g] = nbytes.get(g, 0) + (r.params * r.weight_bits + 7) // 8
        macs[g] = macs.get(g, 0) + r.macs_effective
    parts = []
    for what, d, label in (("storage", nbytes, "storage"), ("macs", macs, "MACs")):
        total = sum(d.values())
        if not total:
            continue
        g, v = max(((k, v) for k, v in d.items() if k != "other"), key=lambda kv: kv[1],
                   default=("other", 0))
        if g == "other" or not v:
            continue
        name = {"fc": "FC", "conv": "conv", "recurrent": "recurrent"}[g]
        parts.append(f"{name} layers hold {100 * v / total:.0f}% of {label}: {_ADVICE[(what, g)]}")
    rec = "; ".join(parts) if parts else "no weighted layers found"
    return Split(params, nbytes, macs, rec)
