"""``quant.mixed``: per-layer weight bit widths from measured sensitivity under a byte budget.

The survey's remark on low-bit representation is that "selecting an optimal number of bits for
any estimation is a tedious task"; we measure instead of guessing (in the spirit of HAWQ /
HAQ, with a plain measurement rather than Hessians or RL). For every Linear/Conv layer and every
candidate width k, only that layer's weights are k-bit fake-quantized (QNN Eq. 15) and the
sensitivity is the mean squared change of the model output on the calibration batches,
relative to the output's mean square. The bits are then chosen greedily: start every layer at
the widest candidate and repeatedly take the one-step narrowing with the smallest sensitivity
increase per byte saved until the weight bytes fit ``max_bytes``. The chosen widths are applied
with ``quant.linear`` (per-layer bits, 8-bit activations). ``model.dnnzip_mixed`` records the
table (sensitivities, bytes, chosen bits) for reports.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from dnnzip.config import check_range, coerce_tuple
from dnnzip.errors import BudgetError, ConfigError
from dnnzip.quant.convert import calib_batches, find_layers
from dnnzip.quant.lowbit import LowBitConfig, Mode, linear_fq, quantize_lowbit
from dnnzip.registry import Context, fresh_copy, technique


@dataclass(frozen=True)
class MixedConfig:
    """candidates: weight widths to choose from (each in [2, 8]).
    max_bytes: budget for the quantized weights (codes + per-channel scales + biases); 0 means
    ``ratio`` x the fp32 weight bytes.
    ratio: budget as a fraction of the fp32 weight bytes, in (0, 1], used when max_bytes is 0.
    act_bits: activation bits (0 = float).
    qat: fine-tune for ``ctx.epochs`` after choosing the bits.
    ignore: module names or "re:" patterns kept in float.
    """

    candidates: tuple[int, ...] = (8, 6, 4, 3, 2)
    max_bytes: int = 0
    ratio: float = 0.15
    act_bits: int = 8
    qat: bool = False
    calib_batches: int = 2
    ignore: tuple[str, ...] = ()

    def __post_init__(self):
        coerce_tuple(self, "candidates")
        if not self.candidates or any(isinstance(b, bool) or not isinstance(b, int)
                                      or not 2 <= b <= 8 for b in self.candidates):
            raise ConfigError("The 'candidates' parameter of MixedConfig must be a non-empty list "
                              f"of ints in [2, 8]. Got {self.candidates!r} instead.")
        object.__setattr__(self, "candidates", tuple(sorted(set(self.candidates), reverse=True)))
        check_range(self, "max_bytes", 0, None, integer=True)
        check_range(self, "ratio", 0.0, 1.0, left_open=True)
        check_range(self, "act_bits", 0, 8, integer=True)
        check_range(self, "calib_batches", 1, None, integer=True)
        coerce_tuple(self, "ignore")


def layer_bytes(layer: nn.Module, bits: int) -> int:
    out = layer.weight.shape[0]
    return math.ceil(layer.weight.numel() * bits / 8) + 4 * out + (4 * out if layer.bias is not None else 0)


def sensitivity(model: nn.Module, names: list[str], candidates, batches) -> dict[str, dict[int, float]]:
    """Relative output MSE when only layer ``name`` has ``k``-bit weights."""
    model = fresh_copy(model).eval()
    with torch.no_grad():
        ref = [model(x) for x in batches]
        power = sum(r.pow(2).mean().item() for r in ref) / len(ref) or 1.0
        table: dict[str, dict[int, float]] = {}
        for name in names:
            layer = model.get_submodule(name)
            w = layer.weight.data.clone()
            table[name] = {}
            for k in candidates:
                layer.weight.data = linear_fq(w, k)
                err = sum((model(x) - r).pow(2).mean().item() for x, r in zip(batches, ref))
                table[name][k] = err / len(batches) / power
            layer.weight.data = w
    return table


def choose_bits(layers: dict[str, nn.Module], table, candidates, budget: int) -> dict[str, int]:
    bits = {n: candidates[0] for n in layers}
    total = sum(layer_bytes(layers[n], bits[n]) for n in layers)
    while total > budget:
        best = None
        for n, layer in layers.items():
            i = candidates.index(bits[n])
            if i + 1 >= len(candidates):
                continue
            k = candidates[i + 1]
            saved = layer_bytes(layer, bits[n]) - layer_bytes(layer, k)
            cost = max(table[n][k] - table[n][bits[n]], 0.0) / max(saved, 1)
            if best is None or cost < best[0]:
                best = (cost, n, k, saved)
        if best is None:
            raise BudgetError(
                f"quant.mixed: even {candidates[-1]}-bit weights everywhere need {total} bytes, "
                f"over max_bytes={budget}; raise max_bytes/ratio or prune first.",
                closest={"bytes": total})
        _, n, k, saved = best
        bits[n] = k
        total -= saved
    return bits


@technique("quant.mixed", MixedConfig)
def quantize_mixed(model: nn.Module, config: MixedConfig, ctx: Context) -> nn.Module:
    """Per-layer k-bit weights chosen from measured sensitivity under a byte budget."""
    layers, rnns = find_layers(model, config.ignore, "quant.mixed")
    fp32 = sum(4 * (m.weight.numel() + (m.bias.numel() if m.bias is not None else 0))
               for m in layers.values())
    budget = config.max_bytes or int(config.ratio * fp32)
    batches = calib_batches(ctx, config.calib_batches)
    table = sensitivity(model, list(layers), config.candidates, batches)
    bits = choose_bits(layers, table, config.candidates, budget)
    low = LowBitConfig(bits=config.candidates[-1], act_bits=config.act_bits, first_last_bits=0,
                       qat=config.qat, ignore=config.ignore)
    rnn_bits = {n: 8 for n in rnns}  # recurrent weights stay 8-bit, outside the search
    out = quantize_lowbit(model, low, ctx, Mode.LINEAR, bits_for={**bits, **rnn_bits})
    out.dnnzip_mixed = {"budget_bytes": budget, "fp32_bytes": fp32, "bits": bits,
                        "bytes": sum(layer_bytes(layers[n], bits[n]) for n in layers),
                        "sensitivity": table}
    return out
