"""Evolutionary per-layer ratio search: accuracy versus MACs, and the knee of the front.

EvoNAS [83] and the knee-guided evolutionary algorithm of Zhou et al. [32] search per-layer
filter keep ratios as a multi-objective problem. Here each trial samples a keep ratio per
channel group, prunes (``prune.channel``, optional short fine-tuning), and scores validation
accuracy (maximise) and MACs (minimise); Optuna's NSGA-II sampler evolves the population. The
result is the Pareto front and its knee point: after scaling both objectives to [0, 1], the
front point farthest from the straight line joining the front's two extremes (the point where a
little more accuracy starts to cost many MACs).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Sequence

from torch import nn

from dnnzip.errors import ConfigError
from dnnzip.prune._util import accuracy
from dnnzip.registry import Context


@dataclass
class SearchResult:
    trials: list[dict] = field(default_factory=list)  # {"keep", "accuracy", "macs"}
    front: list[dict] = field(default_factory=list)
    knee: dict = field(default_factory=dict)

    def layer_ratios(self, point: dict | None = None) -> dict[str, float]:
        """Per-layer *pruning* ratios of ``point`` (a trial or front entry; default the knee),
        ready for ``ChannelPruneConfig.layer_ratios``."""
        return {k: round(1.0 - v, 6) for k, v in (point or self.knee)["keep"].items()}

    def to_dict(self) -> dict:
        return {"trials": self.trials, "front": self.front, "knee": self.knee}


def macs_of(model: nn.Module, example) -> int:
    from dnnzip.profile.counts import count_macs, total_macs
    return int(total_macs(count_macs(model, example[:1]), effective=True))


def pareto_front(points: list[dict]) -> list[dict]:
    """Non-dominated points (higher accuracy, lower MACs), sorted by MACs."""
    front = [p for p in points
             if not any(q["accuracy"] >= p["accuracy"] and q["macs"] <= p["macs"]
                        and (q["accuracy"] > p["accuracy"] or q["macs"] < p["macs"])
                        for q in points)]
    uniq = {(p["accuracy"], p["macs"]): p for p in front}
    return sorted(uniq.values(), key=lambda p: p["macs"])


def knee_point(front: list[dict]) -> dict:
    """The front point farthest from the line through the two extremes (objectives scaled)."""
    if len(front) <= 2:
        return max(front, key=lambda p: p["accuracy"] - 1e-12 * p["macs"])
    a_lo, a_hi = min(p["accuracy"] for p in front), max(p["accuracy"] for p in front)
    m_lo, m_hi = min(p["macs"] for p in front), max(p["macs"] for p in front)
    xy = [((p["macs"] - m_lo) / ((m_hi - m_lo) or 1), (p["accuracy"] - a_lo) / ((a_hi - a_lo) or 1))
          for p in front]
    (x1, y1), (x2, y2) = xy[0], xy[-1]
    norm = math.hypot(x2 - x1, y2 - y1) or 1.0
    dist = [((x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)) / norm for x, y in xy]  # > 0: above
    return front[max(range(len(front)), key=lambda i: dist[i])]


def search_ratios(model: nn.Module, ctx: Context, *, n_trials: int = 30,
                  keep_range: Sequence[float] = (0.2, 1.0), criterion: str = "l1",
                  finetune_epochs: int = 0, split: str = "val", max_batches: int | None = None,
                  population: int = 10, seed: int | None = None,
                  storage: str | None = None) -> SearchResult:
    """NSGA-II over per-group keep ratios (Optuna); returns trials, Pareto front and knee."""
    import optuna

    from dnnzip.prune.graph import Graph
    from dnnzip.registry import apply

    lo, hi = float(keep_range[0]), float(keep_range[1])
    if not (0.0 < lo <= hi <= 1.0):
        raise ConfigError(f"search_ratios: keep_range must satisfy 0 < low <= high <= 1. "
                          f"Got {tuple(keep_range)!r}.")
    if n_trials < 1:
        raise ConfigError(f"search_ratios: n_trials must be >= 1. Got {n_trials!r}.")
    groups = [g.name for g in Graph(copy.deepcopy(model), ctx.example()).groups]
    seed = ctx.seed if seed is None else seed
    run_ctx = copy.copy(ctx)
    run_ctx.epochs, run_ctx.extra = finetune_epochs, {}
    result = SearchResult()

    def objective(trial):
        keep = {g: trial.suggest_float(g, lo, hi) for g in groups}
        ratios = {g: min(1.0 - k, 0.999) for g, k in keep.items()}
        pruned = apply("prune.channel", model, {"ratio": 0.0, "layer_ratios": ratios,
                                                "criterion": criterion,
                                                "finetune": finetune_epochs > 0}, run_ctx)
        acc = accuracy(pruned, ctx, split, max_batches)
        macs = macs_of(pruned, ctx.example())
        result.trials.append({"keep": keep, "accuracy": acc, "macs": macs})
        return acc, macs

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        sampler = optuna.samplers.NSGAIISampler(population_size=max(2, min(population, n_trials)),
                                                seed=seed)
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler,
                                    storage=storage)
        study.optimize(objective, n_trials=n_trials)
    finally:
        optuna.logging.set_verbosity(level)
    result.front = pareto_front(result.trials)
    result.knee = knee_point(result.front)
    return result
