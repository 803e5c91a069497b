"""profile(): every figure present, labelled with how it was obtained, JSON-able."""
from __future__ import annotations

import io
import json

import pytest
import torch
from torch import nn

from dnnzip import zoo
from dnnzip.data.synthetic import synthetic
from dnnzip.errors import ConfigError
from dnnzip.profile import profile, render_table, time_latency
from dnnzip.runtime import get_runtime


def small_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))


def test_profile_figures_and_labels(tmp_path):
    data = synthetic((1, 4, 4), 3, n=64)
    model = small_mlp()
    art = tmp_path / "model.bin"
    art.write_bytes(b"x" * 1234)
    p = profile(model, data, runtimes=("torch", "ort"), repeats=5, warmup=1, artifact=art)
    assert set(p.latency) == {"torch", "onnxruntime"}
    assert p.latency_p50("ort") == p.latency["onnxruntime"].p50_ms
    assert (p.params_total, p.macs_dense, p.macs_effective) == (16 * 32 + 32 + 32 * 3 + 3,
                                                              16 * 32 + 32 * 3, 16 * 32 + 32 * 3)
    assert p.artifact_bytes == 1234 and p.how["artifact_bytes"].startswith("measured")
    assert 0.0 <= p.accuracy <= 1.0 and p.how["accuracy"].startswith("measured")
    assert p.how["energy"] == "estimated (horowitz-45nm)" and p.energy.how == "estimated"
    assert p.memory.how == "estimated" and p.how["macs"] == "counted"
    lat = p.latency["torch"]
    assert lat.p95_ms >= lat.p50_ms > 0 and lat.repeats == 5 and lat.how == "measured"
    d = json.loads(json.dumps(p.to_dict()))
    assert d["latency"]["torch"]["batch_size"] == 1 and [r["name"] for r in d["layers"]] == ["0", "1", "2", "3"]
    point = p.budget_point("torch")
    assert point["bytes_"] == 1234 and point["latency_ms"] == lat.p50_ms
    from rich.console import Console

    console = Console(file=io.StringIO(), width=140)
    console.print(render_table(p))
    text = console.file.getvalue()
    assert "estimated" in text and "1,234 B" in text


def test_profile_without_artifact_or_data_never_guesses():
    p = profile(zoo.build("lenet5"), runtimes=(), batch_size=2)
    assert p.artifact_bytes is None and p.accuracy is None and p.latency == {}
    assert p.macs_dense == 2_293_000 and p.input_shape == (1, 28, 28) and p.batch_size == 2
    with pytest.raises(ConfigError, match="no latency measured on 'torch'"):
        p.latency_p50("torch")


def test_profile_bad_input():
    with pytest.raises(ConfigError, match="batch_size"):
        profile(small_mlp(), example=torch.randn(1, 16), batch_size=0, runtimes=())
    with pytest.raises(ConfigError, match="needs an input"):
        profile(small_mlp(), runtimes=())


def test_time_latency_rejects_bad_repeats():
    s = get_runtime("torch").prepare(small_mlp(), torch.randn(1, 16))
    with pytest.raises(ConfigError, match="repeats"):
        time_latency(s, torch.randn(1, 16), repeats=0)
    stats = time_latency(s, torch.randn(8, 16), warmup=0, repeats=3)
    assert stats.batch_size == 8 and stats.runtime == "torch" and stats.threads == 1
