"""The AdaDeep search space: recipes, i.e. which technique families, in which order, with which
settings.

A recipe is built in the canonical order structural → sparsifying → factorizing → weight
representation → fine-tune, because a later stage can only consume what an earlier one produced
(k-means keeps pruning's zeros; int8 quantizes the factorized layers). Within that order every
family is optional, so the search chooses the *combination* (AdaDeep [71]) and each family's
settings. Families that do not apply to the model (channel pruning on a model with no conv, SVD on
a model with no large Linear) are left out of the space up front.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna
from torch import nn

from dnnzip.recipe import Recipe, Step

REPRESENTATIONS = ("float", "share", "int8", "lowbit", "binary")


@dataclass(frozen=True)
class SearchSpace:
    """Which families may be combined. ``families`` is a subset of
    {"channel", "connection", "svd", "share", "int8", "lowbit", "binary", "distill"}."""

    families: tuple[str, ...] = ("channel", "connection", "svd", "share", "int8", "lowbit",
                                 "distill")
    finetune_epochs: int = 1
    max_connection_sparsity: float = 0.97

    def restrict_to(self, model: nn.Module) -> "SearchSpace":
        has_conv = any(isinstance(m, (nn.Conv1d, nn.Conv2d)) and m.groups == 1
                       for m in model.modules())
        has_big_linear = any(isinstance(m, nn.Linear) and min(m.in_features, m.out_features) >= 32
                             for m in model.modules())
        fams = tuple(f for f in self.families
                     if not (f == "channel" and not has_conv)
                     and not (f == "svd" and not has_big_linear))
        return SearchSpace(fams, self.finetune_epochs, self.max_connection_sparsity)

    def representations(self) -> list[str]:
        return ["float"] + [r for r in REPRESENTATIONS[1:] if r in self.families]

    def sample(self, trial: optuna.Trial) -> Recipe:
        """Ask ``trial`` for one recipe. Parameter names are stable so a study can resume.

        Structural steps (channel, connection, SVD) share one fine-tune after them (optionally
        distilled from the uncompressed model); the representation steps fine-tune themselves
        (k-means fine-tunes its centroids, low-bit and binary run QAT), int8 is post-training.
        """
        steps: list[Step] = []
        f = self.families
        if "channel" in f and trial.suggest_categorical("channel", [False, True]):
            steps.append(Step("prune.channel", {
                "ratio": trial.suggest_float("channel_ratio", 0.1, 0.7, step=0.05),
                "criterion": "l1", "finetune": False}))
        if "connection" in f and trial.suggest_categorical("connection", [False, True]):
            steps.append(Step("prune.connection", {
                "sparsity": trial.suggest_float("connection_sparsity", 0.5,
                                                self.max_connection_sparsity, step=0.01),
                "scope": "global"}))
        if "svd" in f and trial.suggest_categorical("svd", [False, True]):
            steps.append(Step("factor.svd", {
                "rule": "energy",
                "energy": trial.suggest_float("svd_energy", 0.6, 0.99, step=0.01)}))
        if steps:
            steps.append(self._finetune(trial, "ft1"))
        rep = trial.suggest_categorical("representation", self.representations())
        if rep == "share":
            bits = trial.suggest_int("share_bits", 2, 8)
            steps.append(Step("share.kmeans", {"bits": bits, "conv_bits": max(bits, 4)}))
        elif rep == "int8":
            steps.append(Step("quant.int8", {}))
        elif rep == "lowbit":
            steps.append(Step("quant.linear", {"bits": trial.suggest_int("lowbit_bits", 2, 6)}))
        elif rep == "binary":
            steps.append(Step("quant.binary", {}))
        if not steps:
            steps.append(Step("identity", {}))
        name = "+".join(s.technique for s in steps if s.technique != "finetune")
        return Recipe(tuple(steps), name=name)

    def _finetune(self, trial: optuna.Trial, key: str) -> Step:
        distill = "distill" in self.families and trial.suggest_categorical(
            f"{key}_distill", [False, True])
        return Step("finetune", {"epochs": self.finetune_epochs, "distill": bool(distill)},
                    name=f"finetune{'+kd' if distill else ''}")


    def warm_starts(self) -> list[dict[str, Any]]:
        """Combinations the survey reports as strongest, tried first (AdaDeep starts its agent
        from scratch; seeding TPE with these costs a few trials and finds a feasible region far
        sooner on a 2-core machine). Only the ones this space can express are returned."""
        f, reps = self.families, self.representations()
        seeds = []
        if "connection" in f and "share" in reps:  # Deep Compression: prune + share
            seeds.append({"connection": True, "connection_sparsity": 0.9,
                          "representation": "share", "share_bits": 4})
        if "channel" in f and "connection" in f and "share" in reps:
            seeds.append({"channel": True, "channel_ratio": 0.3, "connection": True,
                          "connection_sparsity": 0.85, "representation": "share",
                          "share_bits": 5})
        if "connection" in f and "int8" in reps:
            seeds.append({"connection": True, "connection_sparsity": 0.9,
                          "representation": "int8"})
        defaults = {k: False for k in ("channel", "connection", "svd") if k in f}
        if "distill" in f:
            defaults["ft1_distill"] = True
        return [{**defaults, **seed} for seed in seeds]


def single_family_spaces(space: SearchSpace) -> dict[str, SearchSpace]:
    """One space per family alone (for the auto-vs-single benchmark)."""
    return {fam: SearchSpace((fam,), space.finetune_epochs, space.max_connection_sparsity)
            for fam in space.families if fam != "distill"}


@dataclass
class TrialRecord:
    number: int
    recipe: dict
    values: dict[str, Any] = field(default_factory=dict)
