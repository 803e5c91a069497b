"""prune.channel: remove whole channels/filters; the result is a dense, physically smaller model.

Filters are a layer's output channels; removing them removes the next layers' input channels
too. Coupled layers (residual adds, concatenations, depthwise/group convs, BatchNorm, flatten,
GRU/LSTM hidden units, channel shuffles) are found by ``dnnzip.prune.graph`` and pruned
together, so every group keeps consistent shapes; where grouped convs or a channel shuffle
allow only some channel sets (``dnnzip.prune.shuffle``), a group loses the largest allowed
number up to its ratio (e.g. 6 of 15 channels at ratio 0.5 in the zoo's ShuffleNet). Channels
are ranked by a criterion (``dnnzip.prune.criteria``): l1, l2, bn_scale (with network-slimming
training, survey Eq. 2), taylor, thinet (Eq. 3-5) or reconstruction (He et al., Eq. 1, with the
least-squares refit of the next layer).

Ratios are per layer (``ratio`` with ``layer_ratios`` overrides) or global (one ranking across
groups, scores normalised by their group mean; ``max_layer_ratio`` caps any one group). The
threshold pre-analysis mode of Liu & Liu [26] removes, per group, the channels whose score is
under ``threshold`` x the group's largest score (still capped by ``max_layer_ratio``).
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from dnnzip.config import check_range, coerce_enum, coerce_tuple
from dnnzip.errors import ConfigError
from dnnzip.prune import criteria as C
from dnnzip.prune import reconstruct as R
from dnnzip.prune._util import (calib_batches, check_overrides, check_ratio_map, finetune,
                                lookup)
from dnnzip.prune.criteria import Criterion
from dnnzip.prune.graph import Graph, Group
from dnnzip.registry import Context, fresh_copy, technique

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


class Scope(enum.Enum):
    LAYER = "layer"
    GLOBAL = "global"


@dataclass(frozen=True)
class ChannelPruneConfig:
    """Remove whole channels (filters) ranked by ``criterion``.

    ratio: fraction of each group's channels removed (scope=layer) or of all prunable channels
        (scope=global), in [0, 1).
    criterion: l1, l2, bn_scale, taylor, thinet or reconstruction.
    scope: "layer" or "global".
    layer_ratios: per-layer overrides {root layer name or "re:pattern": ratio} (scope=layer).
    max_layer_ratio: the most any one group may lose (global scope and threshold mode).
    threshold: if set, Liu & Liu's threshold mode replaces ``ratio`` (see module docstring).
    slimming: L1 weight mu on BatchNorm gamma (Eq. 2) for a network-slimming training phase of
        ``ctx.epochs`` before ranking; 0 = off.
    least_squares: refit the next layer by least squares (thinet, reconstruction).
    samples: sampled output positions per consumer layer (thinet, reconstruction).
    calib_batches: calibration batches for data-driven criteria.
    finetune: fine-tune for ``ctx.epochs`` after pruning.
    ignore: layers (names or "re:" patterns) whose output channels are kept.
    round_to: keep a multiple of this many channels in every pruned group (the nearest multiple
        of what the ratio leaves, ties up, at least ``round_to``; a group the ratio leaves whole,
        or no wider than ``round_to``, is kept whole; groups behind a channel shuffle keep their
        balanced layout instead; rounding down may exceed ``max_layer_ratio``). Kernels
        vectorise over channels, so widths such as 10, 19 or 39 can run slower than wider
        multiples of 8: "MACs fell but the model is not faster" (Torch-Pruning's ``round_to``).
    """

    ratio: float = 0.5
    criterion: Criterion = Criterion.L1
    scope: Scope = Scope.LAYER
    layer_ratios: dict = field(default_factory=dict)
    max_layer_ratio: float = 0.9
    threshold: float | None = None
    slimming: float = 0.0
    least_squares: bool = True
    samples: int = 512
    calib_batches: int = 4
    finetune: bool = True
    ignore: tuple[str, ...] = ()
    round_to: int = 1

    def __post_init__(self):
        check_range(self, "ratio", 0.0, 1.0, right_open=True)
        coerce_enum(self, "criterion", Criterion)
        coerce_enum(self, "scope", Scope)
        if not isinstance(self.layer_ratios, dict):
            raise ConfigError("The 'layer_ratios' parameter of ChannelPruneConfig must be a dict "
                              f"of layer name -> ratio. Got {self.layer_ratios!r} instead.")
        check_ratio_map(self, "layer_ratios")
        check_range(self, "max_layer_ratio", 0.0, 1.0, right_open=True)
        if self.threshold is not None:
            check_range(self, "threshold", 0.0, 1.0, right_open=True)
        check_range(self, "slimming", 0.0, 1.0)
        check_range(self, "samples", 16, 1_000_000, integer=True)
        check_range(self, "calib_batches", 1, 10_000, integer=True)
        check_range(self, "round_to", 1, 4096, integer=True)
        for name in ("least_squares", "finetune"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"The '{name}' parameter of ChannelPruneConfig must be a bool. "
                                  f"Got {getattr(self, name)!r} instead.")
        coerce_tuple(self, "ignore")


def slimming_loss(mu: float):
    """``extra_loss`` hook of network slimming: mu * sum |gamma| over BatchNorm layers (Eq. 2)."""

    def extra(model, x, y, logits):
        return mu * sum(m.weight.abs().sum() for m in model.modules()
                        if isinstance(m, _BN) and m.affine)
    return extra


def score_groups(model: nn.Module, graph: Graph, config: ChannelPruneConfig, ctx: Context
                 ) -> tuple[dict, dict]:
    """Importance per group (name -> tensor) and next-layer samples (for the LS refit)."""
    crit = config.criterion
    cols: dict = {}
    if crit in (Criterion.THINET, Criterion.RECONSTRUCTION):
        consumers = sorted({m for g in graph.groups for m, is_out, _, _ in g.deps()
                            if not is_out and R.is_consumer(m)}, key=id)
        cols = R.capture(model, consumers, calib_batches(ctx, config.calib_batches),
                         config.samples, ctx.seed)
    if crit is Criterion.TAYLOR:
        C.accumulate_grads(model, calib_batches(ctx, config.calib_batches))
    scores = {}
    for g in graph.groups:
        s = None
        if crit is Criterion.BN_SCALE:
            s = C.bn_scale(g)
        elif crit is Criterion.TAYLOR:
            s = C.taylor(g)
        elif crit in (Criterion.THINET, Criterion.RECONSTRUCTION):
            Z = R.contributions(g, cols)
            if Z is not None:
                s = C.thinet_scores(Z) if crit is Criterion.THINET else C.lasso_scores(Z)
        if s is None:  # no BatchNorm / no Conv-Linear consumer: fall back to filter norm
            s = C.magnitude(g, 2 if crit is Criterion.L2 else 1)
        scores[g.name] = s
    if crit is Criterion.TAYLOR:
        model.zero_grad(set_to_none=True)
    return scores, cols


def lowest(group: Group, scores: torch.Tensor, k: int) -> list[int]:
    """The ``k`` lowest-scored channels of ``group`` (fewer where grouped convs or channel
    shuffles allow only some sets: ``dnnzip.prune.shuffle.Layout``)."""
    if group.layout is None:
        return sorted(int(i) for i in torch.argsort(scores, stable=True)[:max(k, 0)])
    return group.layout.lowest(scores, k)


def rounded_removal(size: int, k: int, round_to: int) -> int:
    """How many of ``size`` channels to remove instead of ``k`` so that a multiple of
    ``round_to`` remain (the nearest one, ties up; never fewer than ``round_to``)."""
    if round_to <= 1 or k <= 0:
        return k
    if size <= round_to:
        return 0
    keep = max(round_to, int(math.floor((size - k) / round_to + 0.5)) * round_to)
    return max(0, size - min(keep, size))


def select(graph: Graph, scores: dict, config: ChannelPruneConfig) -> dict:
    """Channels to remove per group: name -> sorted list of indices."""
    chosen = _select(graph, scores, config)
    if config.round_to <= 1:
        return chosen
    out = {}
    for g in graph.groups:
        idx = chosen[g.name]
        if g.layout is not None and not g.layout.trivial:
            out[g.name] = idx  # a shuffle's balanced layout decides the widths there
            continue
        k = rounded_removal(g.size, len(idx), config.round_to)
        out[g.name] = idx if k == len(idx) else lowest(g, scores[g.name], k)
    return out


def _select(graph: Graph, scores: dict, config: ChannelPruneConfig) -> dict:
    out = {}
    if config.threshold is not None:
        for g in graph.groups:
            s = scores[g.name]
            cap = math.floor(config.max_layer_ratio * g.size)
            cand = [int(i) for i in torch.argsort(s, stable=True)
                    if s[i] < config.threshold * s.max()]
            out[g.name] = lowest(g, s, min(len(cand), cap))
        return out
    if config.scope is Scope.LAYER:
        for g in graph.groups:
            k = math.floor(lookup(config.layer_ratios, g.name, config.ratio) * g.size + 1e-9)
            out[g.name] = lowest(g, scores[g.name], k)
        return out
    pool = []
    for g in graph.groups:
        s = scores[g.name]
        norm = s / (s.mean() + 1e-12)
        pool += [(float(norm[i]), g.name, i) for i in range(g.size)]
    pool.sort()
    budget = math.floor(config.ratio * sum(g.size for g in graph.groups) + 1e-9)
    caps = {g.name: math.floor(config.max_layer_ratio * g.size) for g in graph.groups}
    out = {g.name: [] for g in graph.groups}
    for _, name, i in pool:
        if budget <= 0:
            break
        if len(out[name]) < caps[name]:
            out[name].append(i)
            budget -= 1
    return {g.name: lowest(g, scores[g.name], len(out[g.name])) if g.layout is not None
            and not g.layout.trivial else sorted(out[g.name]) for g in graph.groups}


def prune_model(model: nn.Module, config: ChannelPruneConfig, ctx: Context) -> dict:
    """Prune ``model`` in place; returns {group: (channels before, after)}."""
    graph = Graph(model, ctx.example(), ignore=config.ignore)
    check_overrides(config, "layer_ratios", [g.name for g in graph.groups])
    scores, cols = score_groups(model, graph, config, ctx)
    chosen = select(graph, scores, config)
    for g in graph.groups:  # check before touching anything: nothing half-written
        if len(chosen[g.name]) >= g.size:
            raise ConfigError(
                f"pruning would remove every channel ({g.size}) of layer '{g.name}'; lower the "
                "ratio for it or add it to ignore=.")
    refit = config.least_squares and config.criterion in (Criterion.THINET,
                                                          Criterion.RECONSTRUCTION)
    report, alive = {}, {}
    for g in graph.groups:
        idxs = chosen[g.name]
        plan = R.refit_plan(g, cols, set(idxs), alive) if refit and idxs else []
        graph.prune(g, idxs)
        R.apply_plan(plan)
        report[g.name] = (g.size, g.size - len(idxs))
    return report


@technique("prune.channel", ChannelPruneConfig)
def prune_channels(model: nn.Module, config: ChannelPruneConfig, ctx: Context) -> nn.Module:
    """Return a physically smaller copy of ``model``; the input is not modified."""
    model = fresh_copy(model)
    if config.slimming > 0:
        finetune(model, ctx, extra_loss=slimming_loss(config.slimming))
    ctx.extra["prune.channel"] = prune_model(model, config, ctx)
    if config.finetune:
        finetune(model, ctx)
    return model.eval()
