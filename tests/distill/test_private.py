import math

import pytest
import torch
from torch import nn

from dnnzip import registry
from dnnzip.distill.private import NoisyTargets, PrivateConfig, noise_scale, perturb
from dnnzip.errors import ConfigError
from dnnzip.registry import Context

from .conftest import mlp


def test_noise_is_calibrated_to_the_mechanism():
    assert noise_scale(PrivateConfig(mechanism="laplace", epsilon=0.5)) == pytest.approx(4.0)
    g = noise_scale(PrivateConfig(mechanism="gaussian", epsilon=0.5, delta=1e-5))
    assert g == pytest.approx(math.sqrt(2) * math.sqrt(2 * math.log(1.25e5)) / 0.5)
    with pytest.raises(ConfigError, match="'epsilon' parameter"):
        PrivateConfig(epsilon=0.0)


@pytest.mark.parametrize("mechanism", ["gaussian", "laplace"])
def test_perturbed_targets_are_distributions_closer_for_larger_epsilon(mechanism):
    probs = torch.softmax(torch.randn(2000, 10), -1)
    gaps = []
    for eps in (0.5, 1000.0):
        noisy = perturb(probs, PrivateConfig(mechanism=mechanism, epsilon=eps),
                        torch.Generator().manual_seed(0))
        assert (noisy >= 0).all()
        torch.testing.assert_close(noisy.sum(-1), torch.ones(2000))
        gaps.append(float((noisy - probs).abs().mean()))
    assert gaps[1] < 0.5 * gaps[0]


class Counting(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.seen = inner, 0

    def forward(self, x):
        self.seen += len(x)
        return self.inner(x)


def test_teacher_is_queried_once_per_sample():
    teacher = Counting(nn.Linear(3, 4))
    targets = NoisyTargets(teacher, PrivateConfig(), seed=0)
    x = torch.randn(6, 3)
    a = targets(x, torch.arange(6))
    b = targets(x, torch.arange(6))
    assert teacher.seen == 6 and torch.equal(a, b)


def test_private_kd_accuracy_degrades_with_noise(digits, teacher):
    accs = {}
    for eps in (0.05, 100.0):
        ctx = Context(data=digits, teacher=teacher, epochs=4, batch_size=64, lr=1e-2, seed=0)
        registry.apply("distill.private", mlp(hidden=16, seed=3), {"epsilon": eps, "alpha": 1.0}, ctx)
        rep = ctx.extra["distill"]["distill.private"]
        assert rep["extra"]["released"] == len(digits.train)
        accs[eps] = rep["accuracy_after"]
    assert accs[100.0] > 0.8
    assert accs[100.0] > accs[0.05] + 0.1
