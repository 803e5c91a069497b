"""torch and onnxruntime runtimes: same outputs, thread scoping, registry errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dnnzip import zoo
from dnnzip.data.synthetic import synthetic
from dnnzip.errors import ConfigError
from dnnzip.export.onnx import to_onnx
from dnnzip.runtime import evaluate_session, get_runtime, runtime_names


@pytest.mark.parametrize("name,shape", [("lenet5", (1, 28, 28)), ("gru", None)])
def test_ort_matches_torch(name, shape):
    torch.manual_seed(0)
    model = zoo.build(name)
    shape = shape or tuple(zoo.info(name)["input_shape"])
    x = torch.randn(5, *shape)
    ref = get_runtime("torch").prepare(model, x).run(x)
    ort = get_runtime("onnxruntime").prepare(model, x[:1], threads=1)  # dynamic batch
    got = ort.run(x)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    stats = get_runtime("ort").time(ort, x, warmup=2, repeats=5)
    assert stats.runtime == "onnxruntime" and stats.p95_ms >= stats.p50_ms > 0


def test_ort_from_existing_file_and_accuracy(tmp_path):
    data = synthetic((1, 28, 28), 10, n=40)
    model = zoo.build("lenet5")
    path = to_onnx(model, data.example_input(2), tmp_path / "m.onnx")
    session = get_runtime("onnxruntime").prepare(path)
    acc_ort = evaluate_session(session, data.test)
    acc_torch = evaluate_session(get_runtime("torch").prepare(model), data.test)
    assert acc_ort == acc_torch
    with pytest.raises(ConfigError, match="does not exist"):
        get_runtime("onnxruntime").prepare(tmp_path / "missing.onnx")


def test_torch_threads_scoped_and_restored():
    before = torch.get_num_threads()
    model = zoo.build("lenet300")
    s = get_runtime("torch").prepare(model, threads=1)
    seen = []
    with s.bind(torch.randn(1, 1, 28, 28)) as call:
        seen.append(torch.get_num_threads())
        call()
    assert seen == [1] and torch.get_num_threads() == before


def test_registry_errors_name_runtimes():
    assert {"torch", "onnxruntime", "c"} <= set(runtime_names())
    with pytest.raises(ConfigError, match="available runtimes: c, onnxruntime, torch"):
        get_runtime("tvm")
    with pytest.raises(ConfigError, match="threads"):
        get_runtime("torch").prepare(zoo.build("lenet300"), threads=0)
    with pytest.raises(ConfigError, match="--runtime onnxruntime"):
        get_runtime("torch").prepare("model.onnx")
