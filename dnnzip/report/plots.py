"""Plots as embedded PNG data URIs (matplotlib, Agg backend, no files left behind)."""
from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def pareto_mask(xs: list[float], ys: list[float]) -> list[bool]:
    """Points not dominated when minimising x and maximising y."""
    out = []
    for i, (x, y) in enumerate(zip(xs, ys)):
        out.append(not any((xj <= x and yj >= y) and (xj < x or yj > y)
                           for j, (xj, yj) in enumerate(zip(xs, ys)) if j != i))
    return out


def scatter_front(points: list[dict], xkey: str, xlabel: str, *, baseline: dict | None,
                  chosen: dict | None, limit: float | None = None, floor: float | None = None,
                  logx: bool = False) -> str:
    fig, ax = plt.subplots(figsize=(5, 3.4))
    xs = [p[xkey] for p in points]
    ys = [p["accuracy"] for p in points]
    feas = [p.get("feasible") for p in points]
    if points:
        ax.scatter([x for x, f in zip(xs, feas) if f], [y for y, f in zip(ys, feas) if f],
                   s=18, c="tab:green", label="feasible trial")
        ax.scatter([x for x, f in zip(xs, feas) if not f], [y for y, f in zip(ys, feas) if not f],
                   s=18, c="tab:gray", alpha=0.6, label="infeasible trial")
        mask = pareto_mask(xs, ys)
        front = sorted((x, y) for x, y, m in zip(xs, ys, mask) if m)
        if front:
            ax.step([f[0] for f in front], [f[1] for f in front], where="post", c="tab:green",
                    lw=1, alpha=0.7, label="Pareto front")
    if baseline:
        ax.scatter([baseline[xkey]], [baseline["accuracy"]], marker="s", c="tab:blue",
                   label="baseline")
    if chosen:
        ax.scatter([chosen[xkey]], [chosen["accuracy"]], marker="*", s=120, c="tab:red",
                   label="chosen (after final fine-tune)")
    if limit:
        ax.axvline(limit, ls="--", c="tab:red", lw=0.8)
    if floor:
        ax.axhline(floor, ls="--", c="tab:orange", lw=0.8)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("val accuracy")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _uri(fig)


def histogram(values: np.ndarray, title: str) -> str:
    fig, ax = plt.subplots(figsize=(3.6, 2.3))
    v = values[np.isfinite(values)]
    nz = v[v != 0]
    ax.hist(nz if nz.size else v, bins=min(80, max(10, len(np.unique(nz)) if nz.size else 10)),
            color="tab:blue")
    zero_share = 1 - nz.size / max(1, v.size)
    ax.set_title(f"{title}  ({zero_share:.0%} zero)", fontsize=8)
    ax.tick_params(labelsize=7)
    return _uri(fig)
