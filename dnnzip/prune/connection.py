"""prune.connection: remove individual weights by magnitude, with masks enforced through training.

Han et al. 2015 [86] (survey Sec. III-C): weights with |w| under a threshold are removed and the
rest fine-tuned; repeated (iterative) this reaches ~8 % of LeNet-300-100's weights kept at no
accuracy loss. The threshold is per layer (a sparsity per layer, or Han's ``std_scale`` x std(W))
or global (one magnitude threshold across layers). Rounds follow ``schedule`` (one-shot,
iterative, AGP of Zhu & Gupta 2017) with fine-tuning between rounds.

``splicing`` is dynamic network surgery (Guo et al. 2016 [42]): masked weights keep receiving
gradients (straight-through) and the mask is updated during fine-tuning with a hysteresis band
[t, (1 + margin) t] around the round's threshold t: below t a weight is cut, above the band it is
spliced back, inside it keeps its state. Deviation: DNS's thresholds come from mean/std of |W|;
here t is the magnitude quantile that meets the round's target sparsity, so the result has a
predictable sparsity (at least the target).

The output keeps its Linear/Conv layers as ``prune.Masked*`` modules (pruned weights exactly zero,
mask in the ``weight_mask`` buffer); the sparsity per layer is written to
``ctx.extra["prune.connection"]``.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch
from torch import nn

from dnnzip.config import check_range, coerce_enum, coerce_tuple
from dnnzip.errors import ConfigError
from dnnzip.prune._util import check_overrides, check_ratio_map, finetune, lookup, matches, set_module
from dnnzip.prune.masked import MASKABLE, is_masked, masked_copy_of, masked_layers, sparsity_report
from dnnzip.prune.schedule import Schedule, sparsity_steps
from dnnzip.registry import Context, fresh_copy, technique


class Scope(enum.Enum):
    LAYER = "layer"
    GLOBAL = "global"


@dataclass(frozen=True)
class ConnectionPruneConfig:
    """Magnitude connection pruning (Han et al. 2015), optionally with splicing (DNS).

    sparsity: fraction of weights removed, in [0, 1) (per layer, or overall with scope=global).
    scope: "layer" (each layer reaches ``sparsity``) or "global" (one magnitude threshold).
    schedule: "one_shot", "iterative" or "agp"; ``steps`` rounds, each followed by fine-tuning
        for ``ctx.epochs`` epochs.
    std_scale: if set, Han's rule: per layer remove |w| < std_scale * std(W) (replaces sparsity).
    splicing: dynamic network surgery (pruned weights keep updating and may come back).
    splice_margin: width of the hysteresis band, as a fraction of the threshold.
    layer_sparsity: per-layer overrides {name or "re:pattern": sparsity} (scope=layer).
    ignore: layer names or "re:" patterns left dense.
    """

    sparsity: float = 0.5
    scope: Scope = Scope.LAYER
    schedule: Schedule = Schedule.ONE_SHOT
    steps: int = 3
    std_scale: float | None = None
    splicing: bool = False
    splice_margin: float = 0.1
    layer_sparsity: dict = field(default_factory=dict)
    ignore: tuple[str, ...] = ()

    def __post_init__(self):
        check_range(self, "sparsity", 0.0, 1.0, right_open=True)
        coerce_enum(self, "scope", Scope)
        coerce_enum(self, "schedule", Schedule)
        check_range(self, "steps", 1, 1000, integer=True)
        if self.std_scale is not None:
            check_range(self, "std_scale", 0.0, 100.0, left_open=True)
        check_range(self, "splice_margin", 0.0, 10.0)
        if not isinstance(self.splicing, bool):
            raise ConfigError(f"The 'splicing' parameter of ConnectionPruneConfig must be a bool. "
                              f"Got {self.splicing!r} instead.")
        if not isinstance(self.layer_sparsity, dict):
            raise ConfigError("The 'layer_sparsity' parameter of ConnectionPruneConfig must be a "
                              f"dict of layer name -> sparsity. Got {self.layer_sparsity!r} instead.")
        check_ratio_map(self, "layer_sparsity")
        coerce_tuple(self, "ignore")


def prunable_layers(model: nn.Module, ignore: tuple[str, ...] = ()) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules()
            if n and (type(m) in MASKABLE or is_masked(m)) and not matches(n, ignore)]


def to_masked(model: nn.Module, ignore: tuple[str, ...] = ()) -> list[tuple[str, nn.Module]]:
    """Replace every prunable layer of ``model`` (in place) by its masked twin."""
    out = []
    for name, layer in prunable_layers(model, ignore):
        new = masked_copy_of(layer)
        if new is not layer:
            set_module(model, name, new)
        out.append((name, new))
    return out


def _scores(m: nn.Module) -> torch.Tensor:
    return (m.weight.detach() * m.weight_mask).abs().flatten()


@torch.no_grad()
def _set_lowest(m: nn.Module, k: int) -> None:
    s = _scores(m)
    mask = torch.ones_like(s)
    if k > 0:
        mask[torch.argsort(s, stable=True)[:k]] = 0.0
    m.weight_mask.copy_(mask.view_as(m.weight_mask))
    m.apply_mask()


def layer_targets(layers, config: ConnectionPruneConfig, sparsity: float, final: float) -> dict:
    """Sparsity per layer for this round (overrides scale with the round's progress)."""
    frac = sparsity / final if final > 0 else 1.0
    return {n: lookup(config.layer_sparsity, n, final) * frac for n, _ in layers}


@torch.no_grad()
def prune_round(layers, config: ConnectionPruneConfig, sparsity: float) -> None:
    """One magnitude-pruning round to ``sparsity`` (the final target is ``config.sparsity``)."""
    if config.std_scale is not None:  # Han et al.: threshold = quality parameter x std(W)
        for name, m in layers:
            kept = m.weight.detach()[m.weight_mask.bool()]
            t = config.std_scale * float(kept.std()) if kept.numel() > 1 else 0.0
            _set_lowest(m, int((_scores(m) < t).sum()))
    elif config.scope is Scope.GLOBAL:
        allw = torch.cat([_scores(m) for _, m in layers])
        k = int(round(sparsity * allw.numel()))
        if k == 0:
            return
        t = torch.sort(allw).values[k - 1]
        for name, m in layers:
            s = _scores(m)
            n_cut = int((s <= t).sum())
            if n_cut >= s.numel():
                raise ConfigError(
                    f"global connection pruning to sparsity {sparsity:.3f} would remove every weight "
                    f"of layer '{name}'; lower 'sparsity', add '{name}' to ignore=, or use "
                    "scope='layer'.")
        for name, m in layers:
            _set_lowest(m, int((_scores(m) <= t).sum()))
    else:
        targets = layer_targets(layers, config, sparsity, config.sparsity)
        for name, m in layers:
            _set_lowest(m, int(round(targets[name] * m.weight.numel())))


def _thresholds(layers, config: ConnectionPruneConfig, sparsity: float) -> dict:
    """Magnitude threshold per layer meeting this round's sparsity (used by splicing)."""
    if config.scope is Scope.GLOBAL:
        allw = torch.cat([m.weight.detach().abs().flatten() for _, m in layers])
        k = max(int(round(sparsity * allw.numel())), 1)
        t = float(torch.sort(allw).values[k - 1])
        return {n: t for n, _ in layers}
    targets = layer_targets(layers, config, sparsity, config.sparsity)
    out = {}
    for n, m in layers:
        w = m.weight.detach().abs().flatten()
        k = int(round(targets[n] * w.numel()))
        out[n] = float(torch.sort(w).values[k - 1]) if k > 0 else -1.0
    return out


def splice_hook(layers, config: ConnectionPruneConfig, sparsity: float):
    """``after_step`` hook of dynamic network surgery: cut below t, splice above (1+margin) t."""

    @torch.no_grad()
    def hook(model: nn.Module) -> None:
        for name, t in _thresholds(layers, config, sparsity).items():
            m = dict(layers)[name]
            w = m.weight.detach().abs()
            m.weight_mask.copy_(torch.where(w <= t, torch.zeros_like(w),
                                            torch.where(w > t * (1 + config.splice_margin),
                                                        torch.ones_like(w), m.weight_mask)))
    return hook


def mask_hook(layers):
    """``after_step`` hook keeping pruned weights exactly zero (optimizer momentum, decay)."""

    @torch.no_grad()
    def hook(model: nn.Module) -> None:
        for _, m in layers:
            m.apply_mask()
    return hook


@technique("prune.connection", ConnectionPruneConfig)
def prune_connections(model: nn.Module, config: ConnectionPruneConfig, ctx: Context) -> nn.Module:
    """Return a copy of ``model`` whose Linear/Conv layers are masked to the target sparsity."""
    model = fresh_copy(model)
    names = [n for n, _ in prunable_layers(model, config.ignore)]
    check_overrides(config, "layer_sparsity", names)
    layers = to_masked(model, config.ignore)
    if not layers:
        ctx.extra["prune.connection"] = sparsity_report(model)
        return model.eval()
    for sparsity in sparsity_steps(config.schedule, config.sparsity, config.steps):
        prune_round(layers, config, sparsity)
        if config.splicing:
            for _, m in layers:
                m.straight_through = True
            finetune(model, ctx, after_step=splice_hook(layers, config, sparsity))
            for _, m in layers:
                m.straight_through = False
        else:
            finetune(model, ctx, after_step=mask_hook(layers))
    with torch.no_grad():
        for _, m in masked_layers(model):
            m.apply_mask()
    ctx.extra["prune.connection"] = sparsity_report(model)
    return model.eval()
