"""Two `dnnzip worker` processes share one PostgreSQL study: N trials, none duplicated."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid

import optuna
import pytest
from optuna.trial import TrialState

from dnnzip.budget import Budget
from dnnzip.load import save_trained
from dnnzip.search import AutoConfig, Search

PG = os.environ.get("DNNZIP_TEST_POSTGRES")
pytestmark = pytest.mark.skipif(not PG, reason="set DNNZIP_TEST_POSTGRES (CI starts a server)")


def test_two_workers_share_one_study(small_mlp, digits, tmp_path):
    weights = tmp_path / "mlp.safetensors"
    save_trained(small_mlp, weights)
    name = f"test-{uuid.uuid4().hex[:8]}"
    cfg = AutoConfig(trials=6, sampler="random", seed=0, families=("connection", "int8"),
                     finetune_epochs=1, final_epochs=0, finalists=0, max_batches=3,
                     latency_repeats=5)
    Search(small_mlp, digits, Budget(max_bytes=8000, runtime="torch"), out_dir=tmp_path / "main",
           config=cfg, storage=PG, model_spec=str(weights), data_spec="digits", study_name=name)
    cmd = [sys.executable, "-m", "dnnzip.cli", "--quiet", "worker", "--storage", PG,
           "--study", name]
    procs = [subprocess.Popen(cmd + ["-o", str(tmp_path / f"w{i}")]) for i in range(2)]
    codes = [p.wait(timeout=300) for p in procs]
    assert codes == [0, 0]
    study = optuna.load_study(study_name=name, storage=PG)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert 6 <= len(done) <= 7  # MaxTrialsCallback may let one in-flight trial finish
    assert len({t.number for t in done}) == len(done)
    assert all(t.user_attrs.get("worker") for t in done)
