import pytest
import torch
from torch import nn

from dnnzip.data.synthetic import synthetic
from dnnzip.errors import ConfigError, UnsupportedLayerError
from dnnzip.factor.design import (DepthwiseConfig, GroupShuffleConfig, apply_depthwise,
                                  apply_group_shuffle, depthwise_block, shuffled_group_conv)
from dnnzip.nn.spec import describe, rebuild_into
from dnnzip.registry import Context

torch.manual_seed(0)


def cnn():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1),
                         nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()


def reload(model, base):
    new = rebuild_into(base, describe(model))
    new.load_state_dict(model.state_dict(), strict=True)
    return new.eval()


def test_ls_init_is_exact_for_separable_kernel():
    d, p = torch.randn(6, 1, 3, 3), torch.randn(10, 6)
    conv = nn.Conv2d(6, 10, 3, padding=1, stride=2)
    conv.weight.data = p[:, :, None, None] * d.transpose(0, 1)
    x = torch.randn(4, 6, 9, 9)
    block = depthwise_block(conv, x).eval()
    assert [type(m) for m in block] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d]
    assert block[0].groups == 6 and block[3].kernel_size == (1, 1)
    assert torch.allclose(block(x), conv(x), atol=1e-4)


def test_multiplier_keeps_more_components_and_full_rank_is_exact():
    conv = nn.Conv2d(4, 6, 3, padding=1)
    x = torch.randn(4, 4, 8, 8)
    errs = [float((depthwise_block(conv, x, multiplier=m).eval()(x) - conv(x)).norm())
            for m in (1, 3, 6)]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-3  # 6 = min(O, k*k): exact
    out = apply_depthwise(cnn(), DepthwiseConfig(multiplier=2),
                          Context(example_input=torch.randn(8, 1, 12, 12), epochs=0))
    assert out[2][0].out_channels == 16 and out[2][3].in_channels == 16
    assert torch.equal(reload(out, cnn())(x := torch.randn(2, 1, 12, 12)), out(x))


def test_ls_init_better_than_random():
    conv = nn.Conv2d(6, 10, 3, padding=1)
    x = torch.randn(4, 6, 8, 8)
    fit = (depthwise_block(conv, x).eval()(x) - conv(x)).pow(2).mean()
    assert fit < conv(x).pow(2).mean()  # explains part of the output energy


def test_depthwise_replaces_standard_convs_only_and_reloads():
    model = cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = apply_depthwise(model, DepthwiseConfig(), Context(example_input=torch.randn(8, 1, 12, 12),
                                                            epochs=0))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert isinstance(out[0], nn.Conv2d)  # in_channels=1: nothing to separate
    assert isinstance(out[2], nn.Sequential) and out[2][0].groups == 8
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert params(out) < params(model)
    x = torch.randn(3, 1, 12, 12)
    assert torch.equal(reload(out, cnn())(x), out(x))


def test_width_and_resolution_multipliers():
    ctx = Context(example_input=torch.randn(8, 1, 12, 12), epochs=0)
    out = apply_depthwise(cnn(), DepthwiseConfig(width=0.5, resolution=0.5), ctx)
    inner = out[1]
    assert inner[2][3].out_channels == 8 and inner[5][3].out_channels == 8
    assert inner[9].in_features == 8 and inner[9].out_features == 10
    assert out(torch.randn(2, 1, 12, 12)).shape == (2, 10)
    with pytest.raises(ConfigError, match="width"):
        apply_depthwise(cnn(), DepthwiseConfig(width=0.5), Context(epochs=0))
    flat_head = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    with pytest.raises(ConfigError, match="resolution"):
        apply_depthwise(flat_head, DepthwiseConfig(resolution=0.5),
                        Context(example_input=torch.randn(2, 3, 8, 8), epochs=0))


def test_distillation_recovery_moves_towards_teacher():
    model = cnn()
    with torch.no_grad():
        model[9].weight *= 30  # a confident teacher, so there is something to match
    data = synthetic((1, 12, 12), 10, n=96)
    x = data.example_input(32)
    cfg = DepthwiseConfig(alpha=1.0)  # pure KD: move towards the teacher only
    start = apply_depthwise(model, cfg, Context(data=data, epochs=0))
    tuned = apply_depthwise(model, cfg, Context(data=data, epochs=3, batch_size=16, lr=3e-3))
    with torch.no_grad():
        gap = lambda m: nn.functional.kl_div(  # noqa: E731
            m(x).log_softmax(-1), model(x).softmax(-1), reduction="batchmean")
        assert gap(tuned) < gap(start)


def test_group_shuffle_pair_keeps_block_diagonal_weights():
    conv = nn.Conv2d(8, 12, 1)
    pair = shuffled_group_conv(conv, 4)
    mask = torch.zeros(12, 8)
    for q in range(12):
        g = q % 4
        mask[q, 2 * g:2 * g + 2] = 1
    ref = nn.Conv2d(8, 12, 1)
    ref.weight.data = conv.weight.data * mask[:, :, None, None]
    ref.bias.data = conv.bias.data
    x = torch.randn(2, 8, 5, 5)
    assert torch.allclose(pair(x), ref(x), atol=1e-5)


def test_group_shuffle_fixed_and_variable_groups_reload():
    out = apply_group_shuffle(cnn(), GroupShuffleConfig(groups=4), Context(epochs=0))
    assert out[2][0].groups == 4 and out[5][0].groups == 4
    var = apply_group_shuffle(cnn(), GroupShuffleConfig(channels_per_group=4), Context(epochs=0))
    assert var[2][0].groups == 2 and var[5][0].groups == 4  # VarGNet: groups vary per layer
    x = torch.randn(2, 1, 12, 12)
    assert torch.equal(reload(var, cnn())(x), var(x))


def test_bad_inputs_are_named_errors():
    lin = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(UnsupportedLayerError, match="no standard convolution"):
        apply_depthwise(lin, DepthwiseConfig(), Context())
    with pytest.raises(UnsupportedLayerError, match="divisible"):
        apply_group_shuffle(cnn(), GroupShuffleConfig(groups=3), Context())
    with pytest.raises(UnsupportedLayerError):
        apply_group_shuffle(cnn(), GroupShuffleConfig(kernels="pointwise"), Context())
    with pytest.raises(ConfigError, match="kernels"):
        GroupShuffleConfig(kernels="some")
    with pytest.raises(ConfigError, match="width"):
        DepthwiseConfig(width=0.0)
