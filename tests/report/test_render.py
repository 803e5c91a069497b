"""The HTML report: self-contained, every section present, and it renders in a real browser."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from dnnzip import zoo
from dnnzip.artifact import pack
from dnnzip.errors import DataError
from dnnzip.report import render_run
from dnnzip.report.plots import pareto_mask


def _measure(b, lat, e, acc, test=None):
    return {"bytes": b, "latency_ms": lat, "energy_mj": e, "accuracy": acc,
            "test_accuracy": test, "runtime": "onnxruntime", "latency_note": ""}


@pytest.fixture
def run_dir(tmp_path):
    model = zoo.build("lenet300", input_size=8, hidden=[16, 8])
    best = tmp_path / "best.dnz"
    pack(model, best)
    trials = [{"number": i, "recipe": {"name": f"recipe{i}", "steps": []},
               "measurement": _measure(1000 * (i + 1), 0.1 * (i + 1), 0.01, 0.8 + 0.01 * i),
               "feasible": i < 3, "score": 0.5 - 0.1 * i, "reused": i == 2} for i in range(5)]
    summary = {"best_path": str(best), "baseline": _measure(20_000, 1.0, 0.05, 0.9, 0.9),
               "best": {"number": 0, "recipe": {"name": "recipe0", "steps": []},
                        "measurement": _measure(1000, 0.1, 0.01, 0.85, 0.84), "feasible": True,
                        "score": 0.5, "path": str(best),
                        "stages": [{"index": 0, "label": "baseline", "path": "x", "bytes": 20_000,
                                    "accuracy": None, "params_nonzero": 100, "seconds": 1.0},
                                   {"index": 1, "label": "share.kmeans", "path": "y",
                                    "bytes": 1000, "accuracy": None, "params_nonzero": 50,
                                    "seconds": 1.0}]},
               "trials": trials, "finalists": [], "out_dir": str(tmp_path)}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "run.json").write_text(json.dumps({"format": 1, "budget": {
        "max_bytes": 4000, "max_latency_ms": None, "max_energy_mj": None, "min_accuracy": 0.8,
        "max_accuracy_drop": None, "runtime": "onnxruntime"}}))
    (tmp_path / "best-recipe.yaml").write_text("name: recipe0\nsteps: []\n")
    return tmp_path


def test_report_is_self_contained_with_every_section(run_dir):
    page = render_run(run_dir).read_text()
    for section in ("Budget verdict", "Baseline vs chosen", "Pareto fronts", "Trials",
                    "Stage table of the chosen recipe", "Per-layer table", "Weight histograms",
                    "Recipe that reproduces the choice", "Environment"):
        assert section in page, section
    assert page.count("data:image/png;base64,") >= 3 + 1
    assert not re.search(r"""(src|href)=['"]?https?://""", page), "external asset"
    assert "fc1.weight" in page and "Budget met" in page


def test_report_of_missing_or_foreign_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        render_run(tmp_path / "nope")
    with pytest.raises(DataError, match="summary.json"):
        render_run(tmp_path)


def test_pareto_mask():
    assert pareto_mask([1, 2, 3, 2], [0.5, 0.9, 0.8, 0.4]) == [True, True, False, False]


@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian chromium not installed")
def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    page = render_run(run_dir)
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2400",
                    f"--screenshot={shot}", page.as_uri()],
                   check=True, timeout=120, capture_output=True)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
