import pytest
import torch
from torch import nn

from dnnzip import registry
from dnnzip.distill.feature import FeatureConfig, FeatureTap, make_projection
from dnnzip.distill.losses import angular_loss
from dnnzip.errors import ConfigError
from dnnzip.registry import Context

from .conftest import mlp


def penultimate(model, x):
    tap = FeatureTap(model, ())
    try:
        with torch.no_grad():
            model(x)
        return tap.feats[0]
    finally:
        tap.remove()


def test_projection_kinds():
    assert isinstance(make_projection(torch.randn(2, 8), torch.randn(2, 32), True, "#0"), nn.Linear)
    conv = make_projection(torch.randn(2, 4, 5, 5), torch.randn(2, 16, 5, 5), True, "#0")
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1)
    assert isinstance(make_projection(torch.randn(2, 8), torch.randn(2, 8), False, "#0"), nn.Identity)
    with pytest.raises(ConfigError, match="spatial"):
        make_projection(torch.randn(2, 4, 5, 5), torch.randn(2, 16, 3, 3), True, "#0")


def test_mismatched_features_without_projection_is_named(digits, teacher):
    ctx = Context(data=digits, teacher=teacher, epochs=1, max_batches=1)
    with pytest.raises(ConfigError, match=r"student shape \(8, 8\) and teacher shape \(8, 128\)"):
        registry.apply("distill.feature", mlp(hidden=8), {"projection": False}, ctx)


def test_layer_lists_must_pair_up():
    with pytest.raises(ConfigError, match="same length"):
        FeatureConfig(student_layers=("1",), teacher_layers=())


def test_angular_distillation_aligns_feature_directions(digits, teacher):
    student = mlp(hidden=128, seed=9)  # same width: identity projection, directions comparable
    x = torch.stack([digits.val[i][0] for i in range(100)])
    t_feat = penultimate(teacher, x)
    before = float(angular_loss(penultimate(student, x), t_feat))
    ctx = Context(data=digits, teacher=teacher, epochs=3, batch_size=64, lr=5e-3, seed=0)
    out = registry.apply("distill.feature", student, {"loss": "angular", "beta": 5.0}, ctx)
    after = float(angular_loss(penultimate(out, x), t_feat))
    assert after < 0.5 * before
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in out.modules())
    assert ctx.extra["distill"]["distill.feature"]["accuracy_after"] > 0.8


def test_hint_with_projection_and_named_layers(digits, teacher):
    ctx = Context(data=digits, teacher=teacher, epochs=4, batch_size=64, lr=1e-2, seed=0)
    out = registry.apply("distill.feature", mlp(hidden=16, seed=2),
                         {"loss": "hint", "student_layers": ["2"], "teacher_layers": ["2"],
                          "alpha": 0.5}, ctx)
    assert [type(m) for m in out] == [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear]
    assert ctx.extra["distill"]["distill.feature"]["accuracy_after"] > 0.7
    with pytest.raises(ConfigError, match="no module named 'nope'"):
        registry.apply("distill.feature", mlp(), {"student_layers": ["nope"],
                                                  "teacher_layers": ["2"]}, ctx)
