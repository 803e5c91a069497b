"""prune.layer: remove whole residual blocks or layers, least important first (survey Sec. III-D).

Candidates are the blocks under the root and its containers whose output has the input's shape
and that hold a Conv/Linear/RNN (residual blocks with an identity shortcut, shape-preserving
layers), plus the upper layers (2..L) of a stacked GRU/LSTM. A removed block becomes ``nn.Identity``; a removed RNN layer
shrinks ``num_layers``. Importance is the damage of removing that block alone, measured on
calibration batches: the rise in cross-entropy (``loss``) or the mean squared change of the
outputs (``distortion``). The ``ratio`` of candidates with least damage are removed together,
then the model is fine-tuned.
"""
from __future__ import annotations

import copy
import enum
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dnnzip.config import check_range, coerce_enum, coerce_tuple
from dnnzip.errors import ConfigError, UnsupportedLayerError
from dnnzip.prune._util import calib_batches, finetune, matches, set_module
from dnnzip.prune.rnn import RNN_TYPES
from dnnzip.registry import Context, fresh_copy, technique


class Importance(enum.Enum):
    LOSS = "loss"
    DISTORTION = "distortion"


@dataclass(frozen=True)
class LayerPruneConfig:
    """Remove whole blocks/layers ranked by the damage their removal does.

    ratio: fraction of the candidate blocks removed, in [0, 1).
    importance: "loss" (needs labels) or "distortion" (output change, no labels needed).
    calib_batches: batches used to measure the damage.
    finetune: fine-tune for ``ctx.epochs`` afterwards.
    ignore: blocks (names or "re:" patterns) never removed.
    """

    ratio: float = 0.25
    importance: Importance = Importance.LOSS
    calib_batches: int = 2
    finetune: bool = True
    ignore: tuple[str, ...] = ()

    def __post_init__(self):
        check_range(self, "ratio", 0.0, 1.0, right_open=True)
        coerce_enum(self, "importance", Importance)
        check_range(self, "calib_batches", 1, 10_000, integer=True)
        if not isinstance(self.finetune, bool):
            raise ConfigError("The 'finetune' parameter of LayerPruneConfig must be a bool. "
                              f"Got {self.finetune!r} instead.")
        coerce_tuple(self, "ignore")


def _shape_preserving(model: nn.Module, example: torch.Tensor) -> set[str]:
    names = {m: n for n, m in model.named_modules()}
    same: set[str] = set()

    def hook(m, inputs, output):
        if (len(inputs) == 1 and isinstance(inputs[0], torch.Tensor)
                and isinstance(output, torch.Tensor) and inputs[0].shape == output.shape):
            same.add(names[m])

    handles = [m.register_forward_hook(hook) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in handles:
            h.remove()
    return same


_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Linear) + RNN_TYPES
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def candidates(model: nn.Module, example: torch.Tensor, ignore=()) -> list[str]:
    """Removable blocks ("name") and RNN layers ("name[l]").

    Walks down from the root through containers (the root, Sequential, ModuleList) only: a
    block is a candidate if it keeps its input's shape and holds a Conv/Linear/RNN layer; a
    block that changes the shape (a down-sampling residual block) is kept whole."""
    same = _shape_preserving(model, example)
    out: list[str] = []

    def visit(prefix: str, module: nn.Module) -> None:
        for child_name, m in module.named_children():
            name = f"{prefix}.{child_name}" if prefix else child_name
            if matches(name, ignore):
                continue
            if isinstance(m, RNN_TYPES):
                out.extend(f"{name}[{l}]" for l in range(1, m.num_layers))
            elif isinstance(m, _CONTAINERS):
                visit(name, m)
            elif name in same and any(isinstance(s, _WEIGHTED) for s in m.modules()):
                out.append(name)

    visit("", model)
    return out


def drop_rnn_layer(rnn: nn.Module, layer: int) -> nn.Module:
    """A copy of ``rnn`` without layer ``layer`` (>= 1); upper layers are renumbered."""
    kw = dict(input_size=rnn.input_size, hidden_size=rnn.hidden_size,
              num_layers=rnn.num_layers - 1, bias=rnn.bias, batch_first=rnn.batch_first,
              dropout=rnn.dropout if rnn.num_layers > 2 else 0.0, bidirectional=rnn.bidirectional)
    new = type(rnn)(**kw)
    sd = {}
    for k, v in rnn.state_dict().items():
        base, _, rest = k.rpartition("_l")
        l = int(rest.split("_")[0])
        suffix = rest[len(str(l)):]
        if l == layer:
            continue
        sd[f"{base}_l{l - (l > layer)}{suffix}"] = v
    new.load_state_dict(sd)
    return new


def remove(model: nn.Module, names: list[str]) -> nn.Module:
    """Remove the listed candidates from ``model`` in place (RNN layers top-down)."""
    rnn_layers = sorted((n for n in names if n.endswith("]")), key=lambda n: -int(n[n.rindex("[") + 1:-1]))
    for n in rnn_layers:
        path, l = n[:n.rindex("[")], int(n[n.rindex("[") + 1:-1])
        set_module(model, path, drop_rnn_layer(model.get_submodule(path), l))
    for n in names:
        if not n.endswith("]"):
            set_module(model, n, nn.Identity())
    return model


@torch.no_grad()
def damage(model: nn.Module, name: str, batches, importance: Importance) -> float:
    trial = remove(copy.deepcopy(model), [name]).eval()
    total = 0.0
    for x, y in batches:
        out = trial(x)
        if importance is Importance.LOSS and y is not None:
            total += float(F.cross_entropy(out, y))
        else:
            total += float((out - model(x)).pow(2).mean())
    return total


@technique("prune.layer", LayerPruneConfig)
def prune_layers(model: nn.Module, config: LayerPruneConfig, ctx: Context) -> nn.Module:
    """Return a copy of ``model`` with its least important blocks/layers removed."""
    model = fresh_copy(model).eval()
    cands = candidates(model, ctx.example(), config.ignore)
    if not cands:
        raise UnsupportedLayerError(
            f"no block of '{type(model).__name__}' can be removed: layer pruning needs residual "
            "blocks or layers whose input and output shapes match, or a stacked GRU/LSTM; use "
            "prune.channel for this model.")
    batches = calib_batches(ctx, config.calib_batches)
    scores = {n: damage(model, n, batches, config.importance) for n in cands}
    k = math.floor(config.ratio * len(cands) + 1e-9)
    drop = sorted(cands, key=lambda n: scores[n])[:k]
    remove(model, drop)
    ctx.extra["prune.layer"] = {"candidates": scores, "removed": drop}
    if config.finetune and drop:
        finetune(model, ctx)
    return model.eval()
