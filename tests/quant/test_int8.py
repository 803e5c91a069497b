import pytest
import torch
from torch import nn

from dnnzip import registry
from dnnzip.artifact import pack, unpack
from dnnzip.data import synthetic
from dnnzip.errors import ConfigError, UnsupportedLayerError
from dnnzip.quant.affine import sqnr_db
from dnnzip.quant.modules import QuantConv2d, QuantLinear
from dnnzip.registry import Context


def test_int8_ptq_is_accurate_and_stores_int8(tiny):
    model, ctx = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q = registry.apply("quant.int8", model, None, ctx)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    x = ctx.data.loader("test", batch_size=64).__iter__().__next__()[0]
    with torch.no_grad():
        assert sqnr_db(model(x), q(x)) > 25
    convs = [m for m in q.modules() if isinstance(m, QuantConv2d)]
    lins = [m for m in q.modules() if isinstance(m, QuantLinear)]
    assert len(convs) == 2 and len(lins) == 2
    for m in convs + lins:
        assert m.weight.dtype == torch.int8 and m.weight_bits == 8
        assert m.weight.abs().max() <= 127
        assert m.weight_scale.shape == (m.out_channels,)
    assert convs[0].relu and lins[0].relu and not lins[1].relu
    # fc1's input quantizer is shared with the conv that feeds it through pool+flatten
    assert torch.equal(lins[0].in_scale, convs[1].out_scale)


@pytest.mark.parametrize("calibration", ["minmax", "percentile", "mse"])
def test_calibration_methods(tiny, calibration):
    model, ctx = tiny
    q = registry.apply("quant.int8", model, {"calibration": calibration}, ctx)
    x = ctx.example_input
    with torch.no_grad():
        assert sqnr_db(model(x), q(x)) > 20


def test_bias_correction_changes_biases(tiny):
    model, ctx = tiny
    a = registry.apply("quant.int8", model, {"bias_correction": False, "per_channel": False}, ctx)
    b = registry.apply("quant.int8", model, {"bias_correction": True, "per_channel": False}, ctx)
    assert not torch.equal(a.fc1.bias, b.fc1.bias)
    assert (a.fc1.bias - b.fc1.bias).abs().max() < 0.05


def test_all_zero_calibration_data_gives_finite_model(tiny):
    model, _ = tiny
    data = synthetic((1, 12, 12), 4, n=64, seed=0)
    for split in ("train", "calib"):
        getattr(data, split).x.zero_() if hasattr(getattr(data, split), "x") else None
    ctx = Context(example_input=torch.zeros(4, 1, 12, 12))
    q = registry.apply("quant.int8", model, None, ctx)
    for m in q.modules():
        if isinstance(m, (QuantConv2d, QuantLinear)):
            for t in (m.in_scale, m.out_scale, m.weight_scale):
                assert torch.isfinite(t).all() and (t > 0).all()
    with torch.no_grad():
        assert torch.isfinite(q(torch.randn(2, 1, 12, 12))).all()


def test_unsupported_layer_is_named_with_ignore_fix():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.bil = nn.Bilinear(4, 4, 2)

        def forward(self, x):
            h = self.fc(x)
            return self.bil(h, h)

    ctx = Context(example_input=torch.randn(3, 4))
    with pytest.raises(UnsupportedLayerError, match=r"'bil' \(Bilinear\).*ignore="):
        registry.apply("quant.int8", Two(), None, ctx)
    q = registry.apply("quant.int8", Two(), {"ignore": ["bil"]}, ctx)
    assert isinstance(q.fc, QuantLinear) and isinstance(q.bil, nn.Bilinear)


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="calibration"):
        registry.get("quant.int8").config({"calibration": "kl"})
    with pytest.raises(ConfigError, match="percentile"):
        registry.get("quant.int8").config({"percentile": 10})


def test_pack_unpack_reproduces_exactly(tiny, tmp_path):
    model, ctx = tiny
    q = registry.apply("quant.int8", model, None, ctx)
    from tests.quant.conftest import TinyCNN  # template rebuild for a non-zoo model
    n = pack(q, tmp_path / "m.dnz", ref={"template": "TinyCNN"})
    r = unpack(tmp_path / "m.dnz", template=TinyCNN()).eval()
    x = ctx.example_input
    with torch.no_grad():
        assert torch.equal(q(x), r(x))
    model._dnnzip_ref = {"template": "TinyCNN"}
    assert n < pack(model, tmp_path / "f.dnz")  # tiny model: manifest dominates


def test_qat_trains_the_weights(tiny):
    model, ctx = tiny
    ptq = registry.apply("quant.int8", model, {"bias_correction": False}, ctx)
    qat = registry.apply("quant.int8", model, {"qat": True}, ctx)
    assert not torch.equal(ptq.fc1.weight, qat.fc1.weight)
    with torch.no_grad():
        assert torch.isfinite(qat(ctx.example_input)).all()
