import pytest
import torch
from torch import nn

from dnnzip.errors import ConfigError, UnsupportedLayerError
from dnnzip.factor.conv import (ConvFactorConfig, apply_conv, hosvd_factors, separable,
                                sparse_linear, tucker2)
from dnnzip.nn.spec import describe, rebuild_into
from dnnzip.registry import Context

torch.manual_seed(0)


def cnn():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, 32),
                         nn.ReLU(), nn.Linear(32, 10)).eval()


def reload(model, base):
    new = rebuild_into(base, describe(model))
    new.load_state_dict(model.state_dict(), strict=True)
    return new.eval()


@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 0, 1), (1, 2, 2)])
def test_full_rank_decompositions_are_exact(stride, padding, dilation):
    c = nn.Conv2d(6, 10, 3, stride=stride, padding=padding, dilation=dilation)
    x = torch.randn(2, 6, 11, 11)
    assert torch.allclose(tucker2(c, 10, 6)(x), c(x), atol=1e-5)
    assert torch.allclose(separable(c, 18)(x), c(x), atol=1e-5)


def test_conv1d_tucker_exact_at_full_rank():
    c = nn.Conv1d(4, 8, 5, padding=2)
    x = torch.randn(2, 4, 20)
    assert torch.allclose(tucker2(c, 8, 4)(x), c(x), atol=1e-5)


def test_hooi_does_not_increase_error():
    W = torch.randn(16, 12, 3, 3)
    errs = []
    for it in (0, 3):
        U_out, core, U_in = hosvd_factors(W, 5, 4, iters=it)
        approx = torch.einsum("rs...,or,is->oi...", core, U_out, U_in)
        errs.append(float((W - approx).norm()))
    assert errs[1] <= errs[0] + 1e-6


def test_tucker_layers_and_shapes():
    out = apply_conv(cnn(), ConvFactorConfig(ratio=0.5), Context())
    seq = out[2]
    assert [tuple(m.weight.shape) for m in seq] == [(4, 8, 1, 1), (8, 4, 3, 3), (16, 8, 1, 1)]
    assert out._dnnzip_factor["2"]["params_after"] < out._dnnzip_factor["2"]["params_before"]
    # conv with 1 input channel gains nothing from Tucker-2: left alone
    assert isinstance(out[0], nn.Conv2d)


@pytest.mark.parametrize("method", ["tucker2", "separable", "sparsesep"])
def test_methods_preserve_input_and_reload(method):
    model = cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = apply_conv(model, ConvFactorConfig(method=method, energy=0.8), Context())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert out._dnnzip_factor, "something must be factored"
    x = torch.randn(3, 1, 8, 8)
    assert out(x).shape == (3, 10)
    again = reload(out, cnn())
    assert torch.equal(again(x), out(x))


def test_error_decreases_with_energy():
    model = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1)).eval()
    x = torch.randn(2, 16, 8, 8)
    errs = [float((apply_conv(model, ConvFactorConfig(energy=e), Context())(x) - model(x))
                  .abs().mean()) for e in (0.5, 0.8, 0.95)]
    assert errs[0] > errs[1] > errs[2]


def test_sparse_linear_density():
    lin = nn.Linear(40, 30)
    seq = sparse_linear(lin, 10, 0.25)
    assert int((seq[0].weight != 0).sum()) == 100


def test_non_conv_layer_is_named_error():
    with pytest.raises(UnsupportedLayerError, match="'6' \\(Linear\\) is not a convolution"):
        apply_conv(cnn(), ConvFactorConfig(layers=("6",)), Context())
    rnn = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(UnsupportedLayerError, match="no Conv1d/Conv2d"):
        apply_conv(rnn, ConvFactorConfig(), Context())
    with pytest.raises(ConfigError, match="match no module"):
        apply_conv(cnn(), ConvFactorConfig(layers=("nope",)), Context())
    with pytest.raises(ConfigError, match="method"):
        ConvFactorConfig(method="cp-als")


def test_finetune_runs_through_ctx():
    from dnnzip.data.synthetic import synthetic

    model = cnn()
    out = apply_conv(model, ConvFactorConfig(ratio=0.5, finetune=True, distill=True),
                     Context(data=synthetic((1, 8, 8), 10, n=64), epochs=1, max_batches=2,
                             batch_size=16))
    base = apply_conv(model, ConvFactorConfig(ratio=0.5), Context())
    changed = any(not torch.equal(a, b) for a, b in
                  zip(out.state_dict().values(), base.state_dict().values()))
    assert changed
