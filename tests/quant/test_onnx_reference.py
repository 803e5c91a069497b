import numpy as np
import pytest
import torch
from torch import nn

from dnnzip import registry
from dnnzip.errors import ConfigError
from dnnzip.quant import reference
from dnnzip.quant.onnx_qdq import export_int8, session
from dnnzip.registry import Context


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from tests.quant.conftest import TinyCNN
    from dnnzip.data import synthetic
    torch.manual_seed(0)
    model = TinyCNN().eval()
    data = synthetic((1, 12, 12), 4, n=128, seed=0)
    ctx = Context(data=data, example_input=data.example_input(4), batch_size=32)
    q = registry.apply("quant.int8", model, None, ctx)
    path = tmp_path_factory.mktemp("onnx") / "tiny_int8.onnx"
    info = export_int8(q, data.example_input(1), path)
    return q, info, data


def test_ort_runs_integer_kernels_and_matches_torch(exported):
    q, info, data = exported
    assert info.graph_ops["QuantizeLinear"] >= 4 and info.graph_ops["DequantizeLinear"] >= 8
    assert info.int8_ops.get("QLinearConv", 0) == 4          # 2 convs + 2 linears as 1x1 conv
    assert "Conv" not in info.runtime_ops and "Gemm" not in info.runtime_ops
    x = data.example_input(16)
    y_ort = session(info.path).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        y = q(x).numpy()
    step = float(q.fc2.out_scale)
    assert np.abs(y_ort - y).max() <= step + 1e-6


def test_export_needs_a_quantized_model(tmp_path):
    with pytest.raises(ConfigError, match="quant.int8"):
        export_int8(nn.Sequential(nn.Linear(3, 2)), torch.randn(1, 3), tmp_path / "x.onnx")


def _single(layer, x, tmp_path, relu):
    model = nn.Sequential(layer, nn.ReLU()) if relu else nn.Sequential(layer)
    ctx = Context(example_input=x)
    q = registry.apply("quant.int8", model.eval(), {"bias_correction": False}, ctx)
    info = export_int8(q, x[:1], tmp_path / "one.onnx")
    mod = q[0]
    y = session(info.path).run(None, {"input": x.numpy()})[0]
    ort_codes = np.rint(y / float(mod.out_scale)).astype(np.int64) + int(mod.out_zp)
    ref_codes = reference.int8_layer(mod, reference.quantize_input(mod, x.numpy()))
    return ort_codes, ref_codes.astype(np.int64), info


@pytest.mark.parametrize("relu", [False, True])
def test_integer_reference_matches_ort_conv(tmp_path, relu):
    torch.manual_seed(1)
    x = torch.randn(8, 3, 9, 9)
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1)
    ort_codes, ref_codes, info = _single(conv, x, tmp_path, relu)
    assert "QLinearConv" in info.int8_ops
    diff = np.abs(ort_codes - ref_codes)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.97


def test_integer_reference_matches_ort_linear(tmp_path):
    torch.manual_seed(2)
    x = torch.randn(16, 20)
    ort_codes, ref_codes, _ = _single(nn.Linear(20, 7), x, tmp_path, False)
    diff = np.abs(ort_codes - ref_codes)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.97


def test_fixed_point_multiplier():
    m = np.array([0.75, 0.0123, 1e-5, 0.5])
    m0, shift = reference.quantize_multiplier(m)
    assert ((m0 >= 2**30) & (m0 < 2**31)).all()
    assert np.allclose(m0 * 2.0**-31 * 2.0**-shift, m, rtol=1e-9)
    acc = np.array([[1000, -1000, 123456, 7]])
    y = reference.requantize(acc, m0, shift, 10)
    expect = np.clip(np.round(acc * m) + 10, 0, 255)
    assert np.abs(y.astype(int) - expect).max() <= 1


def test_export_failure_names_the_op(tmp_path):
    from dnnzip.errors import UnsupportedLayerError

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return torch.kthvalue(self.fc(x), 2, dim=1).values

    q = registry.apply("quant.int8", M().eval(), None, Context(example_input=torch.randn(3, 4)))
    with pytest.raises(UnsupportedLayerError, match="aten.kthvalue"):
        export_int8(q, torch.randn(1, 4), tmp_path / "f.onnx")


def test_compact_names_keep_the_computation(exported, tmp_path):
    """compact() (run by export_int8) shortens names and drops default attributes only: a copy
    with the exporter's long names restored by a fresh, uncompacted export computes the same."""
    import onnx
    from dnnzip.quant import onnx_qdq
    q, info, data = exported
    g = onnx.load(info.path).graph
    assert all(n.name == "" for n in g.node)
    internal = [o for n in g.node for o in n.output if o != "output"]
    assert internal and max(len(o) for o in internal) <= 4
    assert all(t.name.startswith("_") for t in g.initializer)
    again = tmp_path / "again.onnx"
    onnx.save(onnx.load(info.path), str(again))
    assert onnx_qdq.compact(again) == 0                      # idempotent: nothing left to shorten
    x = data.example_input(8).numpy()
    ref = session(info.path).run(None, {"input": x})[0]
    assert np.array_equal(ref, session(again).run(None, {"input": x})[0])


def test_compact_preserves_outputs_of_an_uncompacted_graph(tmp_path):
    import onnx
    from onnx import helper, TensorProto
    from dnnzip.quant import onnx_qdq
    w = helper.make_tensor("a.long.weight.name", TensorProto.FLOAT, [2, 1, 3, 3],
                           np.linspace(-1, 1, 18).tolist())
    node = helper.make_node("Conv", ["input", "a.long.weight.name"], ["conv_out"], name="conv",
                            strides=[1, 1], dilations=[1, 1], group=1, pads=[0, 0, 0, 0])
    relu = helper.make_node("Relu", ["conv_out"], ["output"], name="relu")
    graph = helper.make_graph([node, relu], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 5, 5])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    src, dst = tmp_path / "src.onnx", tmp_path / "dst.onnx"
    onnx.save(model, str(src)); onnx.save(model, str(dst))
    assert onnx_qdq.compact(dst) > 0
    conv = onnx.load(str(dst)).graph.node[0]
    assert [a.name for a in conv.attribute] == []
    x = np.random.default_rng(0).standard_normal((1, 1, 5, 5)).astype("float32")
    assert np.array_equal(session(src).run(None, {"input": x})[0],
                          session(dst).run(None, {"input": x})[0])
