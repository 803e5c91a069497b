"""``distill.kd``: logits transfer with soft targets (Hinton, Vinyals & Dean [61]).

The student is trained on alpha · T² · KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) · CE(s, y)
(survey Eq. 19–22: logits Eq. 19, softmax Eq. 20, tempered softmax Eq. 21, the soft-target
gradient (p - q)/T of Eq. 22 — hence the T² factor that keeps the soft term's gradient scale
independent of T). ``patience`` adds early halting on validation agreement (``halting.py``), the
survey's answer-in-practice to "when does ∇ → 0".
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dnnzip.config import check_range
from dnnzip.distill.common import eval_limit, eval_split, require_data, resolve_teacher
from dnnzip.distill.halting import check_patience, fit_student
from dnnzip.distill.losses import check_logits, check_temperature, kd_loss_fn
from dnnzip.distill.report import distill_report, record
from dnnzip.registry import Context, fresh_copy, technique


@dataclass(frozen=True)
class KDConfig:
    """Hinton knowledge distillation.

    T: softmax temperature (> 0); soft targets get softer as T grows.
    alpha: weight of the soft (teacher) term; 1 - alpha weighs cross-entropy with the labels.
    patience: stop when validation agreement with the teacher has not improved for this many
        epochs (0 = train for ctx.epochs).
    min_delta: smallest agreement gain that counts as an improvement.
    report: record a DistillReport (agreement, ECE before/after) in ctx.extra['distill'].
    """

    T: float = 4.0
    alpha: float = 0.9
    patience: int = 0
    min_delta: float = 0.0
    report: bool = True

    def __post_init__(self):
        check_range(self, "T", 0.0, None, left_open=True)
        check_range(self, "alpha", 0.0, 1.0)
        check_patience(self)
        check_range(self, "min_delta", 0.0, 1.0)


def check_pair(student: nn.Module, teacher: nn.Module, ctx: Context, where: str) -> None:
    """Run both on one example batch: their outputs must have the same shape."""
    x = ctx.example()
    was = student.training
    student.eval()
    try:
        with torch.no_grad():
            check_logits(student(x), teacher(x), where)
    finally:
        student.train(was)


def distill(student: nn.Module, teacher: nn.Module, ctx: Context, *, T: float, alpha: float,
            patience: int = 0, min_delta: float = 0.0):
    """Train ``student`` in place by KD from ``teacher``; returns the FitLog."""
    check_temperature(T, "distill.kd")
    return fit_student(student, ctx, loss_fn=kd_loss_fn(teacher, T, alpha), teacher=teacher,
                       patience=patience, min_delta=min_delta)


@technique("distill.kd", KDConfig)
def apply_kd(model: nn.Module, config: KDConfig, ctx: Context) -> nn.Module:
    """Return a copy of the student ``model`` trained by Hinton KD from ``ctx.teacher``."""
    data = require_data(ctx, "distill.kd")
    teacher = resolve_teacher(model, ctx, "distill.kd")
    student = fresh_copy(model)
    check_pair(student, teacher, ctx, "distill.kd")
    before = fresh_copy(model) if config.report else None
    log = distill(student, teacher, ctx, T=config.T, alpha=config.alpha,
                  patience=config.patience, min_delta=config.min_delta)
    split = eval_split(data)
    if config.report and split is not None:
        record(ctx, "distill.kd", distill_report(
            before, student, teacher, split, limit=eval_limit(ctx), epochs=log.epochs,
            halted=log.halted, best_epoch=log.best_epoch, trainer=log.trainer))
    student.eval()
    return student
