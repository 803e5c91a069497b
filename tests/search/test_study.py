"""The auto search end to end on a tiny model: feasible result, infeasible budget, resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from dnnzip.budget import Budget
from dnnzip.errors import BudgetError, ConfigError
from dnnzip.load import save_trained
from dnnzip.search import AutoConfig, Search, auto

FAMILIES = ("connection", "int8", "lowbit")


def _cfg(**kw):
    base = dict(trials=4, sampler="random", seed=0, families=FAMILIES, finetune_epochs=1,
                final_epochs=1, finalists=1, max_batches=3, latency_repeats=5)
    return AutoConfig(**{**base, **kw})


def test_auto_meets_budget_and_writes_artifact(small_mlp, digits, tmp_path):
    baseline_bytes = None
    budget = Budget(max_bytes=12_000, min_accuracy=0.5, runtime="torch")
    result = auto(small_mlp, digits, budget, out_dir=tmp_path, config=_cfg(trials=6))
    baseline_bytes = result.baseline["bytes"]
    best = Path(result.best_path)
    assert best.is_file()
    size = best.stat().st_size
    assert size <= 12_000 < baseline_bytes
    assert result.best["measurement"]["bytes"] == size  # the reported size is the file's
    assert result.best["measurement"]["test_accuracy"] >= 0.5
    assert (tmp_path / "summary.json").is_file() and (tmp_path / "report.html").is_file()
    assert "<img src='data:image/png;base64," in (tmp_path / "report.html").read_text()


def test_infeasible_budget_names_closest_and_keeps_study(small_mlp, digits, tmp_path):
    budget = Budget(max_bytes=64, min_accuracy=0.99, runtime="torch")
    with pytest.raises(BudgetError) as info:
        auto(small_mlp, digits, budget, out_dir=tmp_path, config=_cfg(trials=3))
    err = info.value
    assert "closest" in str(err) and err.closest["violations"]
    assert err.exit_code == 1
    assert (tmp_path / "study.db").is_file()
    # a looser budget in the same folder reuses the three measured trials
    looser = Budget(max_bytes=64, min_accuracy=0.99, runtime="torch")
    s = Search(small_mlp, digits, looser, out_dir=tmp_path, config=_cfg(trials=3))
    assert len(s.completed()) == 3


def test_empty_budget_and_incompatible_folder(small_mlp, digits, tmp_path):
    with pytest.raises(ConfigError, match="at least one constraint"):
        Search(small_mlp, digits, Budget(), out_dir=tmp_path, config=_cfg())
    (tmp_path / "run.json").write_text(json.dumps({"format": 999}))
    with pytest.raises(ConfigError, match="incompatible"):
        Search(small_mlp, digits, Budget(max_bytes=10_000), out_dir=tmp_path, config=_cfg())


def test_unreachable_storage_is_named(small_mlp, digits, tmp_path):
    with pytest.raises(ConfigError, match="storage"):
        Search(small_mlp, digits, Budget(max_bytes=10_000), out_dir=tmp_path, config=_cfg(),
               storage="redis://nowhere")


def _count_complete(db: Path) -> int:
    """Read-only peek (plain sqlite3) so polling never races the writer creating its tables."""
    import sqlite3
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute("SELECT count(*) FROM trials WHERE state='COMPLETE'").fetchone()[0]
    except sqlite3.Error:
        return 0


def _completed(db: Path) -> list:
    if not db.is_file():
        return []
    try:
        study = optuna.load_study(study_name="dnnzip-auto", storage=f"sqlite:///{db}")
    except Exception:  # noqa: BLE001 - study not created yet
        return []
    return study.get_trials(states=(TrialState.COMPLETE,))


def test_kill_minus_nine_then_resume_loses_and_recomputes_nothing(small_mlp, tmp_path,
                                                                  monkeypatch):
    weights = tmp_path / "mlp.safetensors"
    save_trained(small_mlp, weights)
    out = tmp_path / "run"
    script = textwrap.dedent(f"""
        from dnnzip.budget import Budget
        from dnnzip.data import load_data
        from dnnzip.load import load_model
        from dnnzip.search import AutoConfig, Search
        cfg = AutoConfig(trials=8, sampler="random", seed=0, families={FAMILIES!r},
                         finetune_epochs=1, final_epochs=0, finalists=0, max_batches=3,
                         latency_repeats=5)
        s = Search(load_model({str(weights)!r}), load_data("digits", seed=0),
                   Budget(max_bytes=8000, runtime="torch"), out_dir={str(out)!r}, config=cfg)
        s.run_trials()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=os.getcwd())
    deadline = time.time() + 240
    while _count_complete(out / "study.db") < 2 and time.time() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the search finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {t.number: t.user_attrs["digest"] for t in _completed(out / "study.db")}
    assert len(before) >= 2

    calls = []
    orig = Search.evaluate_recipe

    def counting(self, recipe, folder, **kw):
        calls.append(recipe.digest())
        return orig(self, recipe, folder, **kw)

    monkeypatch.setattr(Search, "evaluate_recipe", counting)
    from dnnzip.data import load_data
    from dnnzip.load import load_model
    cfg = AutoConfig(trials=8, sampler="random", seed=0, families=FAMILIES, finetune_epochs=1,
                     final_epochs=0, finalists=0, max_batches=3, latency_repeats=5)
    s = Search(load_model(weights), load_data("digits", seed=0),
               Budget(max_bytes=8000, runtime="torch"), out_dir=out, config=cfg)
    s.run_trials()
    after = {t.number: t.user_attrs["digest"] for t in s.completed()}
    assert len(after) == 8
    for number, digest in before.items():  # nothing lost
        assert after[number] == digest
    assert len(calls) <= 8 - len(before)  # nothing completed was recomputed
    assert not set(calls) & set(before.values())


def test_recipe_invalid_for_the_model_is_an_infeasible_trial(small_mlp, digits, tmp_path,
                                                             monkeypatch):
    """A recipe the model cannot take (a ConfigError from a technique) completes as an
    infeasible trial with the worst score, so TPE learns from it; rerunning reuses it."""
    calls = []
    real = Search.evaluate_recipe

    def flaky(self, recipe, folder, **kw):
        calls.append(recipe.digest())
        if len(calls) == 1:
            raise ConfigError("global connection pruning would remove every weight of 'fc2'")
        return real(self, recipe, folder, **kw)

    monkeypatch.setattr(Search, "evaluate_recipe", flaky)
    budget = Budget(max_bytes=64, min_accuracy=0.99, runtime="torch")
    s = Search(small_mlp, digits, budget, out_dir=tmp_path, config=_cfg(trials=3))
    s.run_trials()
    done = s.completed()
    assert len(done) == 3 and not s.study.get_trials(states=(TrialState.FAIL,))
    bad = [t for t in done if t.user_attrs.get("error")]
    assert len(bad) == 1 and bad[0].value == -10.0 and bad[0].user_attrs["feasible"] is False
    assert "measurement" not in bad[0].user_attrs
    assert (tmp_path / "trials" / bad[0].user_attrs["digest"] / "error.json").is_file()
    err = s._budget_error(done)                      # the closest point ignores invalid trials
    assert err.closest["trial"] != bad[0].number
