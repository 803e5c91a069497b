import copy

import pytest
import torch
from torch import nn

from dnnzip import registry
from dnnzip.distill.few_sample import merge_map, solve_map
from dnnzip.errors import DataError, UnsupportedLayerError
from dnnzip.registry import Context

from .conftest import train_ce


def cnn(width=8, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(width * 4, 10))


@pytest.fixture(scope="module")
def conv_teacher(digits):
    return train_ce(cnn(width=12, seed=0), digits, epochs=4)


def test_solve_recovers_an_invertible_mix_exactly():
    torch.manual_seed(0)
    teacher = nn.Linear(6, 5)
    A = torch.randn(5, 5) + 3 * torch.eye(5)
    student = copy.deepcopy(teacher)
    merge_map(student, A, torch.zeros(5))  # student = A · teacher
    x = torch.randn(200, 6)
    Q, c = solve_map(student(x).detach(), teacher(x).detach(), ridge=0.0, bias=True)
    merge_map(student, Q, c)
    torch.testing.assert_close(student(x), teacher(x), atol=1e-4, rtol=1e-4)


def test_fskd_recovers_pruned_inputs_and_merges(digits, conv_teacher):
    from dnnzip.distill.report import accuracy, predict
    student = copy.deepcopy(conv_teacher)
    with torch.no_grad():  # prune half the input channels of the second conv (widths kept)
        student[2].weight[:, ::2] = 0
    keys = list(student.state_dict())
    ctx = Context(data=digits, teacher=conv_teacher)
    out = registry.apply("distill.few_sample", student, {"samples": 300}, ctx)
    rep = ctx.extra["distill"]["distill.few_sample"]
    assert rep["extra"]["samples"] == 300 and "2" in rep["extra"]["aligned"]
    assert list(out.state_dict()) == keys  # merged: no extra layers
    assert rep["accuracy_after"] > rep["accuracy_before"]
    assert rep["agreement_after"] >= rep["agreement_before"]
    t_acc = accuracy(*predict(conv_teacher, digits.val))
    assert t_acc - rep["accuracy_after"] < 0.5 * (t_acc - rep["accuracy_before"]) + 1e-9


def test_pruned_output_widths_are_skipped_and_named(digits, conv_teacher):
    student = cnn(width=6, seed=1)  # every hidden width differs from the teacher's
    ctx = Context(data=digits, teacher=conv_teacher)
    out = registry.apply("distill.few_sample", student, None, ctx)
    skipped = ctx.extra["distill"]["distill.few_sample"]["extra"]["skipped"]
    assert "output width differs (student 6, teacher 12)" in skipped["0"]
    assert "6" not in skipped  # the classifier (10 outputs) is aligned


def test_nothing_alignable_and_empty_sample_set_are_named(digits, conv_teacher):
    odd = nn.Sequential(nn.Conv2d(1, 5, 3, padding=1, groups=1), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(5, 10))
    ctx = Context(data=digits, teacher=conv_teacher, extra={})
    with pytest.raises(UnsupportedLayerError, match="found no layer it can align.*output width differs"):
        registry.apply("distill.few_sample", odd, {"layers": ["0"]}, ctx)
    with pytest.raises(DataError, match="few-sample set is empty"):
        registry.apply("distill.few_sample", cnn(), None, Context(teacher=conv_teacher))


def test_masked_layers_are_skipped_not_densified(digits, conv_teacher):
    sparse = registry.apply("prune.connection", conv_teacher, {"sparsity": 0.5},
                            Context(data=digits, epochs=0))
    ctx = Context(data=digits, teacher=conv_teacher)
    with pytest.raises(UnsupportedLayerError, match="masked"):
        registry.apply("distill.few_sample", sparse, None, ctx)
