import pytest
import torch

from dnnzip import registry
from dnnzip.distill.halting import fit_student
from dnnzip.distill.kd import KDConfig
from dnnzip.distill.losses import kd_loss_fn
from dnnzip.distill.report import match_rate, predict
from dnnzip.errors import ConfigError, DataError
from dnnzip.registry import Context

from .conftest import mlp


def make_ctx(digits, teacher, **kw):
    base = dict(data=digits, teacher=teacher, epochs=3, batch_size=64, lr=1e-2, seed=0)
    return Context(**{**base, **kw})


def test_kd_student_moves_towards_teacher_and_input_is_untouched(digits, teacher):
    student = mlp(hidden=8, seed=3)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    ctx = make_ctx(digits, teacher, epochs=6)
    out = registry.apply("distill.kd", student, {"T": 4.0, "alpha": 0.9}, ctx)
    assert out is not student
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())
    rep = ctx.extra["distill"]["distill.kd"]
    assert rep["agreement_after"] > rep["agreement_before"] + 0.3
    assert rep["agreement_after"] > 0.75
    assert 0.0 <= rep["ece_after"] <= 1.0
    assert rep["samples"] == len(digits.val)


def test_kd_loss_fn_works_as_a_generic_finetune_loss(digits, teacher):
    student = mlp(hidden=16, seed=4)
    ctx = make_ctx(digits, teacher, epochs=4)
    log = fit_student(student, ctx, loss_fn=kd_loss_fn(teacher, T=2.0, alpha=0.5))
    t_logits, _ = predict(teacher, digits.val)
    s_logits, _ = predict(student, digits.val)
    assert log.epochs == 4 and log.trainer == "dnnzip.train"
    assert match_rate(s_logits, t_logits) > 0.8


def test_teacher_with_other_classes_is_named(digits):
    ctx = make_ctx(digits, mlp(classes=7), epochs=1)
    with pytest.raises(ConfigError, match=r"teacher output shape \(8, 7\) differs from the student's \(8, 10\)"):
        registry.apply("distill.kd", mlp(), None, ctx)


def test_bad_config_and_missing_data():
    with pytest.raises(ConfigError, match="'T' parameter of KDConfig"):
        KDConfig(T=0.0)
    with pytest.raises(ConfigError, match="'patience' parameter"):
        KDConfig(patience=-1)
    with pytest.raises(DataError, match="ctx.data"):
        registry.apply("distill.kd", mlp(), None, Context())


def test_early_halting_stops_when_agreement_stalls(digits, teacher):
    student = mlp(hidden=8, seed=5)
    ctx = make_ctx(digits, teacher, epochs=20, lr=0.0)  # lr=0: agreement can never improve
    out = registry.apply("distill.kd", student, {"patience": 2}, ctx)
    rep = ctx.extra["distill"]["distill.kd"]
    assert rep["extra"]["epochs"] == 3 and rep["extra"]["halted"] is True
    assert rep["extra"]["best_epoch"] == 0
    assert all(torch.equal(a, b) for a, b in zip(out.state_dict().values(),
                                                 student.state_dict().values()))


def test_halting_restores_best_epoch(digits, teacher):
    student = mlp(hidden=8, seed=6)
    ctx = make_ctx(digits, teacher, epochs=6)
    log = fit_student(student, ctx, loss_fn=kd_loss_fn(teacher), teacher=teacher, patience=2)
    best = max(row["agreement"] for row in log.history)
    assert log.history[log.best_epoch]["agreement"] == best
    t_logits, _ = predict(teacher, digits.val)
    assert match_rate(predict(student, digits.val)[0], t_logits) == pytest.approx(best)


def test_halting_needs_a_teacher(digits):
    with pytest.raises(ConfigError, match="patience"):
        fit_student(mlp(), make_ctx(digits, None), loss_fn=kd_loss_fn(mlp()), patience=1)
