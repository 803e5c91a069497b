"""The terminal summary of an auto run: baseline vs chosen model, and the budget verdict."""
from __future__ import annotations

from rich.table import Table


def _fmt(v, kind):
    if v is None:
        return "-"
    if kind == "bytes":
        return f"{int(v):,} B"
    if kind == "ms":
        return f"{v:.4f} ms"
    if kind == "mj":
        return f"{v:.4g} mJ (est.)"
    return f"{v:.4f}"


def render_summary(result: dict) -> Table:
    base = result.get("baseline") or {}
    best = (result.get("best") or {}).get("measurement") or {}
    t = Table(title="dnnzip auto: baseline vs chosen model (every figure measured on a "
                    "written, reloaded file)")
    t.add_column("")
    t.add_column("baseline", justify="right")
    t.add_column("chosen", justify="right")
    t.add_column("ratio", justify="right")
    rows = [("file size", "bytes", "bytes"), ("latency p50 (" + str(base.get("runtime")) + ")",
                                              "latency_ms", "ms"),
            ("energy", "energy_mj", "mj"), ("val accuracy", "accuracy", "acc"),
            ("test accuracy", "test_accuracy", "acc")]
    for label, key, kind in rows:
        b, c = base.get(key), best.get(key)
        ratio = ""
        if kind in ("bytes", "ms", "mj") and b and c:
            ratio = f"{b / c:.1f}x smaller" if kind == "bytes" else f"{b / c:.2f}x"
        elif kind == "acc" and b is not None and c is not None:
            ratio = f"{(c - b) * 100:+.2f} pt"
        t.add_row(label, _fmt(b, kind), _fmt(c, kind), ratio)
    recipe = (result.get("best") or {}).get("recipe") or {}
    t.caption = (f"chosen recipe: {recipe.get('name', '-')}  ·  artifact: "
                 f"{result.get('best_path') or '-'}  ·  trials: {len(result.get('trials', []))}")
    return t
