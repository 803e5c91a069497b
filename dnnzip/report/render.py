"""One self-contained HTML page per run folder: plots embedded, no external assets.

Shows baseline vs chosen model, the Pareto fronts (accuracy vs bytes, latency, energy), the trial
table, the stage table of the chosen recipe, a per-layer table and weight histograms of the chosen
artifact, the budget verdict, the recipe YAML that reproduces it, and the environment.
"""
from __future__ import annotations

import html
import json
import os
import platform
from pathlib import Path

from dnnzip.errors import DataError
from dnnzip.io import atomic_write
from dnnzip.report import plots


def _load(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _num(v, fmt="{:,}"):
    return "-" if v is None else fmt.format(v)


def _environment() -> list[list[str]]:
    import numpy
    import onnxruntime
    import optuna
    import torch
    from dnnzip import __version__
    return [["dnnzip", __version__], ["python", platform.python_version()],
            ["torch", torch.__version__], ["onnxruntime", onnxruntime.__version__],
            ["optuna", optuna.__version__], ["numpy", numpy.__version__],
            ["machine", f"{platform.machine()}, {os.cpu_count()} CPU(s), {platform.platform()}"]]


def _layers_and_hists(artifact: Path) -> tuple[str, str]:
    from dnnzip.artifact import read_manifest, unpack
    model = unpack(artifact)
    manifest = read_manifest(artifact)
    enc = {k: v.get("encoding") for k, v in manifest.get("tensors", {}).items()}
    rows, hists = [], []
    for name, t in model.state_dict().items():
        if t.dim() < 2 and not name.endswith(("codes", "weight")):
            continue
        if not t.is_floating_point() and not name.endswith("codes"):
            continue
        n = t.numel()
        nz = int((t != 0).sum())
        rows.append([name, "×".join(map(str, t.shape)), f"{n:,}", f"{1 - nz / max(1, n):.1%}",
                     enc.get(name, "-"), len(t.unique()) if n <= 2_000_000 else "-"])
        if len(hists) < 12:
            hists.append(f"<img src='{plots.histogram(t.float().flatten().numpy(), name)}'>")
    return (_table(["tensor", "shape", "elements", "zeros", "encoding", "distinct values"], rows),
            "".join(hists))


def render_run(run_dir: str | os.PathLike) -> Path:
    run = Path(run_dir)
    if not run.is_dir():
        raise DataError(f"run folder {str(run)!r} does not exist; give the -o folder of "
                        "dnnzip auto or dnnzip compress")
    info = _load(run / "run.json") or {}
    summary = _load(run / "summary.json")
    stages = _load(run / "stages.json")
    if summary is None and stages is None:
        raise DataError(f"{str(run)!r} has neither summary.json (dnnzip auto) nor stages.json "
                        "(dnnzip compress); is it a dnnzip run folder?")
    parts = [f"<h1>dnnzip report: {html.escape(run.name)}</h1>"]
    if summary:
        parts += _auto_sections(summary, info)
    if stages:
        parts.append("<h2>Stage table</h2>" + _stage_table(stages["stages"]))
    best = run / "best.dnz"
    if not best.is_file() and stages:
        best = Path(stages["stages"][-1]["path"])
    if best.is_file():
        layers, hists = _layers_and_hists(best)
        parts.append(f"<h2>Per-layer table ({html.escape(best.name)})</h2>{layers}")
        parts.append(f"<h2>Weight histograms</h2><div class='grid'>{hists}</div>")
    recipe = run / "best-recipe.yaml"
    if recipe.is_file():
        parts.append("<h2>Recipe that reproduces the choice</h2><pre>"
                     f"{html.escape(recipe.read_text())}</pre><p>Run it with <code>dnnzip compress "
                     f"MODEL --recipe {html.escape(str(recipe))} --data DATA -o OUT</code>.</p>")
    parts.append("<h2>Environment</h2>" + _table(["", ""], _environment()))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>dnnzip report</title>"
            f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>")
    out = run / "report.html"
    atomic_write(out, page.encode("utf-8"))
    return out


def _stage_table(stages: list[dict]) -> str:
    base = stages[0]["bytes"]
    rows = [[s["index"], s["label"], f"{s['bytes']:,}", f"{base / s['bytes']:.1f}x",
             _num(s.get("accuracy"), "{:.4f}"), f"{s['params_nonzero']:,}"] for s in stages]
    return _table(["#", "stage", "file bytes", "ratio", "test accuracy", "non-zero params"], rows)


def _auto_sections(summary: dict, info: dict) -> list[str]:
    base = summary["baseline"]
    best = summary.get("best")
    bm = best["measurement"] if best else None
    budget = info.get("budget", {})
    parts = []
    verdict = ("<p class='ok'>Budget met.</p>" if best else
               "<p class='bad'>No model met the budget; the closest points are in the trial "
               "table.</p>")
    constraints = ", ".join(f"{k}={v}" for k, v in budget.items() if v is not None)
    parts.append(f"<h2>Budget verdict</h2><p>Budget: {html.escape(constraints)}</p>{verdict}")
    rows = []
    for label, key, fmt in [("file bytes", "bytes", "{:,}"), ("latency p50 ms", "latency_ms",
                                                              "{:.4f}"),
                            ("energy mJ (estimated)", "energy_mj", "{:.4g}"),
                            ("val accuracy", "accuracy", "{:.4f}"),
                            ("test accuracy", "test_accuracy", "{:.4f}")]:
        rows.append([label, _num(base.get(key), fmt), _num(bm.get(key) if bm else None, fmt)])
    parts.append("<h2>Baseline vs chosen</h2>" + _table(["", "baseline", "chosen"], rows))
    pts = [{**t["measurement"], "feasible": t["feasible"]} for t in summary["trials"]
           if t.get("measurement")]
    floor = budget.get("min_accuracy")
    figs = [plots.scatter_front(pts, "bytes", "artifact bytes", baseline=base, chosen=bm,
                                limit=budget.get("max_bytes"), floor=floor, logx=True),
            plots.scatter_front(pts, "latency_ms", f"latency p50 ms ({base.get('runtime')})",
                                baseline=base, chosen=bm, limit=budget.get("max_latency_ms"),
                                floor=floor),
            plots.scatter_front(pts, "energy_mj", "energy mJ (estimated)", baseline=base,
                                chosen=bm, limit=budget.get("max_energy_mj"), floor=floor)]
    parts.append("<h2>Pareto fronts</h2><div class='grid'>" +
                 "".join(f"<img src='{f}'>" for f in figs) + "</div>")
    rows = [[t["number"], (t.get("recipe") or {}).get("name", "-"),
             _num(t["measurement"]["bytes"]), _num(t["measurement"]["latency_ms"], "{:.4f}"),
             _num(t["measurement"]["energy_mj"], "{:.4g}"),
             _num(t["measurement"]["accuracy"], "{:.4f}"), "yes" if t["feasible"] else "no",
             _num(t.get("score"), "{:.4f}"), "cached" if t.get("reused") else ""]
            for t in summary["trials"] if t.get("measurement")]
    parts.append("<h2>Trials</h2>" + _table(["#", "recipe", "bytes", "latency ms", "energy mJ",
                                             "val acc", "feasible", "Eq. 25 score", ""], rows))
    if best and best.get("stages"):
        parts.append("<h2>Stage table of the chosen recipe</h2>" + _stage_table(best["stages"]))
    return parts


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0;font-size:13px}td,th{border:1px solid #ccc;
padding:3px 8px;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:8px}.ok{color:#080;font-weight:bold}
.bad{color:#b00;font-weight:bold}pre{background:#f6f6f6;padding:1em}"""
