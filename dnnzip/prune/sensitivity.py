"""Per-layer sensitivity analysis (survey [38]): accuracy versus pruning ratio, one layer at a time.

Each prunable layer (a channel group for ``kind="channel"``, a Linear/Conv for
``kind="connection"``) is pruned alone at each ratio, without fine-tuning, and the metric is
measured on a split. The curves set per-layer ratios (``ratios_for(max_drop)``: the largest
ratio per layer whose drop stays within ``max_drop``), and are exported as data (``to_dict``,
``to_csv``) and as a plot (``plot``).
"""
from __future__ import annotations

import copy
import csv
import io
import os
from dataclasses import dataclass, field
from typing import Sequence

from torch import nn

from dnnzip.errors import ConfigError
from dnnzip.io import atomic_write
from dnnzip.prune._util import accuracy
from dnnzip.registry import Context


@dataclass
class SensitivityResult:
    kind: str
    ratios: list[float]
    baseline: float
    curves: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "ratios": self.ratios, "baseline": self.baseline,
                "curves": self.curves}

    def ratios_for(self, max_drop: float) -> dict[str, float]:
        """Largest tested ratio per layer whose metric drop is <= ``max_drop`` (0 if none)."""
        out = {}
        for name, accs in self.curves.items():
            ok = [r for r, a in zip(self.ratios, accs) if self.baseline - a <= max_drop]
            out[name] = max(ok, default=0.0)
        return out

    def to_csv(self, path: str | os.PathLike) -> str:
        rows = [["layer", *[f"{r:g}" for r in self.ratios]]]
        rows += [[name, *[f"{a:.6f}" for a in accs]] for name, accs in self.curves.items()]
        return _atomic(path, lambda f: csv.writer(f).writerows(rows), text=True)

    def plot(self, path: str | os.PathLike, title: str | None = None) -> str:
        import matplotlib
        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for name, accs in self.curves.items():
            ax.plot(self.ratios, accs, marker="o", ms=3, label=name)
        ax.axhline(self.baseline, ls="--", c="k", lw=1, label="unpruned")
        ax.set_xlabel(f"{self.kind} pruning ratio of the layer")
        ax.set_ylabel("accuracy")
        ax.set_title(title or f"sensitivity ({self.kind} pruning, no fine-tuning)")
        ax.legend(fontsize=6, ncol=2)
        fig.tight_layout()
        try:
            return _atomic(path, lambda f: fig.savefig(f, format="png", dpi=120), text=False)
        finally:
            plt.close(fig)


def _atomic(path, write, text: bool) -> str:
    """Render with ``write(file)`` into memory, then ``dnnzip.io.atomic_write`` it."""
    buf = io.StringIO(newline="") if text else io.BytesIO()
    write(buf)
    data = buf.getvalue()
    atomic_write(path, data.encode("utf-8") if text else data)
    return os.fspath(path)


def sensitivity(model: nn.Module, ctx: Context, *, kind: str = "channel",
                ratios: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9), criterion: str = "l1",
                split: str = "val", max_batches: int | None = None,
                layers: Sequence[str] | None = None) -> SensitivityResult:
    """Accuracy-vs-ratio curve of every prunable layer (or of ``layers``)."""
    if kind not in ("channel", "connection"):
        raise ConfigError(f"sensitivity: kind must be 'channel' or 'connection'. Got {kind!r}.")
    ratios = [float(r) for r in ratios]
    for r in ratios:
        if not 0.0 <= r < 1.0:
            raise ConfigError(f"sensitivity: every ratio must be a float in [0, 1). Got {r!r}.")
    quiet = copy.copy(ctx)
    quiet.extra = {}
    result = SensitivityResult(kind, ratios, accuracy(copy.deepcopy(model), ctx, split, max_batches))
    for name in layers or _layers(model, kind, ctx):
        accs = []
        for r in ratios:
            pruned = _prune_one(model, kind, name, r, criterion, quiet)
            accs.append(accuracy(pruned, ctx, split, max_batches))
        result.curves[name] = accs
    return result


def _layers(model: nn.Module, kind: str, ctx: Context) -> list[str]:
    if kind == "channel":
        from dnnzip.prune.graph import Graph
        return [g.name for g in Graph(copy.deepcopy(model), ctx.example()).groups]
    from dnnzip.prune.connection import prunable_layers
    return [n for n, _ in prunable_layers(model)]


def _prune_one(model, kind, name, ratio, criterion, ctx) -> nn.Module:
    from dnnzip.registry import apply
    if kind == "channel":
        cfg = {"ratio": 0.0, "layer_ratios": {name: ratio}, "criterion": criterion,
               "finetune": False}
        return apply("prune.channel", model, cfg, ctx)
    ctx0 = copy.copy(ctx)
    ctx0.epochs = 0
    return apply("prune.connection", model, {"sparsity": 0.0, "layer_sparsity": {name: ratio}},
                 ctx0)
