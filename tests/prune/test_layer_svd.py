import pytest
import torch
from torch import nn

from dnnzip import zoo
from dnnzip.errors import ConfigError, UnsupportedLayerError
from dnnzip.prune.layer import LayerPruneConfig, candidates, drop_rnn_layer
from dnnzip.registry import apply


def test_resnet_candidates_are_identity_shortcut_blocks():
    m = zoo.build("resnet").eval()
    assert candidates(m, torch.randn(2, 1, 28, 28)) == ["layer1.0", "layer1.1", "layer2.1",
                                                          "layer3.1"]


def test_least_damaging_block_is_removed(h):
    m = zoo.build("resnet").eval()
    with torch.no_grad():  # layer2.1's residual branch contributes nothing: removing it is free
        m.layer2[1].bn2.weight.zero_()
        m.layer2[1].bn2.bias.zero_()
    ctx = h.make_ctx((1, 28, 28), n=64)
    out = apply("prune.layer", m, {"ratio": 0.25, "importance": "distortion"}, ctx)
    assert ctx.extra["prune.layer"]["removed"] == ["layer2.1"]
    assert isinstance(out.layer2[1], nn.Identity)
    x = ctx.example_input
    assert torch.allclose(out(x), m(x), atol=1e-5)
    assert torch.equal(h.reload(out, zoo.build("resnet"))(x), out(x))


@pytest.mark.parametrize("cls", [nn.GRU, nn.LSTM])
def test_dropping_an_rnn_layer_keeps_the_others(cls):
    rnn = cls(3, 8, num_layers=3, batch_first=True)
    new = drop_rnn_layer(rnn, 1)
    assert new.num_layers == 2
    assert torch.equal(new.weight_ih_l0, rnn.weight_ih_l0)
    assert torch.equal(new.weight_hh_l1, rnn.weight_hh_l2)


def test_stacked_gru_loses_a_layer(h):
    m = zoo.build("gru", layers=3).eval()
    ctx = h.make_ctx((1, 40), n=64)
    out = apply("prune.layer", m, {"ratio": 0.5}, ctx)
    assert out.rnn.num_layers == 2
    x = ctx.example_input
    assert torch.equal(h.reload(out, zoo.build("gru", layers=3))(x), out(x))


def test_model_without_removable_blocks_is_named(h):
    with pytest.raises(UnsupportedLayerError, match="LeNet5.*prune.channel"):
        apply("prune.layer", zoo.build("lenet5"), None, h.make_ctx((1, 28, 28)))


def test_layer_config_checks():
    with pytest.raises(ConfigError, match="ratio"):
        LayerPruneConfig(ratio=1.0)
    with pytest.raises(ConfigError, match="importance"):
        LayerPruneConfig(importance="vibes")


def test_prune_svd_reports_eq8_eq9_gains(h):
    m = zoo.build("gru").eval()
    ctx = h.make_ctx((1, 40), n=64)
    out = apply("prune.svd", m, {"keep": 0.25, "finetune": False}, ctx)
    rep = ctx.extra["prune.svd"]
    assert rep and all(r["S_g"] > 1 and r["C_g"] > 1 for r in rep.values())
    k = rep["fc"]["rank"]
    n, mm = m.fc.weight.shape
    assert rep["fc"]["S_g"] == pytest.approx(n * mm / (n * k + k * k + k * mm))  # Eq. 8
    assert out(ctx.example_input).shape == (4, 10)
    with pytest.raises(ConfigError, match="keep"):
        apply("prune.svd", m, {"keep": 1.0}, ctx)
