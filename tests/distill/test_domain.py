import pytest
import torch

from dnnzip import registry
from dnnzip.data import synthetic
from dnnzip.distill.domain import DomainConfig, ShiftedDataset, rotate, shift_domain
from dnnzip.distill.report import accuracy, predict
from dnnzip.errors import ConfigError, DataError
from dnnzip.registry import Context

from .conftest import mlp, train_ce


def test_rotate_by_90_matches_rot90():
    x = torch.arange(16.0).reshape(1, 4, 4)
    r = rotate(x, 90.0)
    assert torch.allclose(r, torch.rot90(x, 1, dims=(1, 2)), atol=1e-4) or \
        torch.allclose(r, torch.rot90(x, -1, dims=(1, 2)), atol=1e-4)


def test_shifts_keep_labels_and_are_deterministic(digits):
    for kind in ("rotate", "noise", "invert"):
        target = shift_domain(digits, kind, seed=1)
        assert target.name == f"digits+{kind}"
        assert len(target.train) == len(digits.train)
        x0, y0 = digits.train[5]
        x1, y1 = target.train[5]
        assert int(y1) == int(y0) and x1.shape == x0.shape and not torch.equal(x0, x1)
        assert torch.equal(target.train[5][0], x1)  # same sample, same shift
    inv = ShiftedDataset(ShiftedDataset(digits.train, "invert", 1.0), "invert", 1.0)
    torch.testing.assert_close(inv[3][0], digits.train[3][0])


def test_rotate_needs_images_and_unknown_shift_is_named():
    seq = synthetic((1, 40), 3, n=16)
    with pytest.raises(DataError, match="rotate"):
        shift_domain(seq, "rotate").train[0]
    with pytest.raises(ConfigError, match="'shift' parameter of DomainConfig"):
        DomainConfig(shift="blur")


def test_cross_domain_kd_beats_the_source_only_student(digits):
    teacher = train_ce(mlp(hidden=128, seed=1), digits, epochs=6)
    student = train_ce(mlp(hidden=16, seed=2), digits, epochs=6)  # source-only student
    target = shift_domain(digits, "invert")
    source_only = accuracy(*predict(student, target.val))
    ctx = Context(data=digits, teacher=teacher, epochs=6, batch_size=64, lr=1e-2, seed=0,
                  extra={"target_data": target})
    out = registry.apply("distill.domain", student, {"alpha": 0.7}, ctx)
    rep = ctx.extra["distill"]["distill.domain"]
    assert rep["extra"]["target"] == "digits+invert"
    assert rep["accuracy_before"] == pytest.approx(source_only)
    assert rep["accuracy_after"] > source_only + 0.2
    assert rep["teacher_accuracy"] > rep["extra"]["source_teacher_accuracy"]  # adapted teacher
    assert accuracy(*predict(out, target.val)) == pytest.approx(rep["accuracy_after"])


def test_unlabelled_target_uses_soft_targets_only(digits):
    teacher = train_ce(mlp(hidden=64, seed=1), digits, epochs=4)
    ctx = Context(data=digits, teacher=teacher, epochs=1, batch_size=64, max_batches=3)
    out = registry.apply("distill.domain", mlp(), {"shift": "noise", "target_labels": False}, ctx)
    assert ctx.extra["distill"]["distill.domain"]["extra"]["target"] == "digits+noise"
    assert out(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_builtin_shift_refuses_integer_inputs():
    import torch
    from torch.utils.data import TensorDataset
    from dnnzip.distill.domain import ShiftedDataset
    from dnnzip.errors import DataError
    ids = TensorDataset(torch.randint(0, 100, (4, 8)), torch.zeros(4, dtype=torch.long))
    with pytest.raises(DataError, match="target_data"):
        ShiftedDataset(ids, "noise", 0.1)[0]
