"""The built-in recipes parse, validate and run end to end on a tiny problem."""
from __future__ import annotations

import json

import pytest
import torch

from dnnzip import cli, zoo
from dnnzip.artifact import unpack
from dnnzip.data import load_data
from dnnzip.recipe import Recipe, builtin_recipes, run_recipe
from dnnzip.registry import Context
from dnnzip.share.kmeans import distinct_values
from dnnzip.train import TrainSettings, fit


def test_deep_compression_is_builtin_and_valid():
    assert "deep-compression" in builtin_recipes()
    r = Recipe.load("deep-compression")
    assert [s.technique for s in r.steps] == ["prune.connection", "finetune", "share.kmeans"]
    assert r.steps[2].options["bits"] == 5 and r.steps[2].options["conv_bits"] == 8
    assert Recipe.from_dict(r.to_dict()) == r


@pytest.fixture(scope="module")
def digits_model():
    torch.set_num_threads(1)
    data = load_data("digits", seed=0)
    torch.manual_seed(0)
    m = zoo.build("lenet300", input_size=8, hidden=[64, 32])
    fit(m, data, TrainSettings(epochs=6, batch_size=32, lr=1e-2, progress=False))
    return m.eval(), data


def test_deep_compression_runs_and_shrinks_each_stage(digits_model, tmp_path):
    model, data = digits_model
    ctx = Context(data=data, epochs=1, batch_size=32, lr=1e-2, max_batches=20, seed=0)
    final, stages = run_recipe(model, Recipe.load("deep-compression"), ctx, out_dir=tmp_path)
    assert [s.label for s in stages] == ["baseline", "prune", "finetune", "share"]
    base, pruned, tuned, shared = stages
    assert pruned.params_nonzero <= 0.15 * base.params_nonzero
    assert pruned.bytes < base.bytes
    assert shared.bytes < pruned.bytes / 1.5  # 5-bit shared values code smaller than fp32 values
    assert shared.bytes < base.bytes / 5  # a ~2.6 KB manifest dominates this 6.5k-weight model
    assert tuned.accuracy >= pruned.accuracy and shared.accuracy >= tuned.accuracy - 0.05
    assert shared.accuracy > 0.6  # 90 % pruned, 5 bits, 1 short epoch per stage on 8x8 digits
    reloaded = unpack(shared.path)
    assert all(k <= 32 for k in distinct_values(reloaded).values())
    assert not any(hasattr(m, "weight_mask") for m in reloaded.modules())  # masks not stored twice
    # the same folder resumes instead of recomputing
    _, again = run_recipe(model, Recipe.load("deep-compression"), ctx, out_dir=tmp_path)
    assert all(s.resumed for s in again) and [s.bytes for s in again] == [s.bytes for s in stages]


def test_cli_compress_prints_stage_table(capsys, tmp_path):
    code = 0
    try:
        cli.main(["compress", "lenet300", "--recipe", "deep-compression", "--data", "digits",
                  "--limit", "128", "--json", "-o", str(tmp_path / "dc")])
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    assert code == 0, out.err
    rows = json.loads(out.out)["stages"]
    assert [r["label"] for r in rows] == ["baseline", "prune", "finetune", "share"]
    assert rows[-1]["bytes"] < rows[0]["bytes"] / 10  # lenet300 on 8x8: 26.6k weights
