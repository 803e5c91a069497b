import pytest
import torch
from torch import nn

from dnnzip import registry, zoo
from dnnzip.distill.assistant import build_assistant, interpolate, parse_spec, AssistantConfig
from dnnzip.errors import ConfigError
from dnnzip.registry import Context

from .conftest import mlp


def test_parse_spec():
    assert parse_spec("vgg_bn:width=0.5,num_classes=10") == ("vgg_bn", {"width": 0.5, "num_classes": 10})
    assert parse_spec("lenet300") == ("lenet300", {})
    with pytest.raises(ConfigError, match="key=value"):
        parse_spec("lenet300:oops")


def test_interpolated_assistant_sits_between_widths():
    student, teacher = mlp(hidden=8), mlp(hidden=64)
    x = torch.randn(4, 1, 8, 8)
    mid = interpolate(student, teacher, 0.5, x)
    assert mid[1].out_features == 36 and mid[3].in_features == 36
    assert type(mid[1]) is nn.Linear  # lazy modules materialised into plain ones
    assert mid(x).shape == (4, 10)
    n = lambda m: sum(p.numel() for p in m.parameters())
    assert n(student) < n(mid) < n(teacher)


def test_zoo_kwargs_are_interpolated():
    s = zoo.build("lenet300", hidden=[30, 10])
    t = zoo.build("lenet300", hidden=[300, 100])
    mid = build_assistant(s, t, 0.5, AssistantConfig(), torch.randn(2, 1, 28, 28))
    assert mid.fc1.out_features == 165 and mid.fc2.out_features == 55


def test_different_structures_need_an_explicit_assistant():
    student = mlp(hidden=8)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(ConfigError, match="assistant="):
        interpolate(student, teacher, 0.5, torch.randn(2, 1, 8, 8))


def test_takd_chain_runs_and_compares(digits, teacher):
    ctx = Context(data=digits, teacher=teacher, epochs=5, batch_size=64, lr=1e-2, seed=0)
    student = mlp(hidden=8, seed=7)
    out = registry.apply("distill.assistant", student, {"steps": 2, "compare": True}, ctx)
    rep = ctx.extra["distill"]["distill.assistant"]["extra"]
    assert [round(c["position"], 3) for c in rep["chain"]] == [0.667, 0.333]
    assert rep["chain"][0]["params"] > rep["chain"][1]["params"] > rep["student_params"]
    assert isinstance(rep["helped"], bool)
    assert rep["helped"] == (rep["takd_accuracy"] > rep["plain_kd_accuracy"])
    assert rep["takd_accuracy"] > 0.5
    assert out[1].out_features == 8
