"""``distill.self``: class-wise self-knowledge distillation, CS-KD (Yun et al. [62]).

No teacher: the model regularises itself. Each training sample x of class y is paired with another
sample x' of the same class, and the loss (survey, Sec. VI-A) is

    L = CE(x, y; φ) + λ T² KL(P(y | x'; φ, T) || P(y | x; φ, T))

with the prediction on x' detached (it is the target, as in the authors' code). The pairing is a
dataset wrapper: ``ClassPairs`` draws x' uniformly among the other samples of class y.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset

from dnnzip.config import check_range
from dnnzip.distill.common import (eval_limit, eval_split, labels_of, require_data, resolve_teacher,
                                   train_loader)
from dnnzip.distill.halting import check_patience, fit_student
from dnnzip.distill.losses import cs_kd_loss
from dnnzip.distill.report import distill_report, record
from dnnzip.registry import Context, fresh_copy, technique


@dataclass(frozen=True)
class SelfKDConfig:
    """CS-KD self-distillation.

    T: temperature of both predictions (> 0).
    lam: weight λ of the class-wise KL term.
    patience: early halting on validation agreement with the model's own starting point
        (0 = train for ctx.epochs).
    report: record a DistillReport in ctx.extra['distill'] (the 'teacher' there is the input model).
    """

    T: float = 4.0
    lam: float = 1.0
    patience: int = 0
    report: bool = True

    def __post_init__(self):
        check_range(self, "T", 0.0, None, left_open=True)
        check_range(self, "lam", 0.0, None)
        check_patience(self)


class ClassPairs(Dataset):
    """Yields ``(x, y, x')`` with x' another sample of class y (itself if y has one sample)."""

    def __init__(self, base: Dataset, seed: int = 0):
        self.base = base
        labels = labels_of(base)
        self.labels = labels
        self.by_class = {int(c): torch.nonzero(labels == c).flatten() for c in labels.unique()}
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.base)

    def partner(self, i: int) -> int:
        pool = self.by_class[int(self.labels[i])]
        if len(pool) == 1:
            return i
        j = i
        while j == i:
            j = int(pool[torch.randint(len(pool), (1,), generator=self.gen)])
        return j

    def __getitem__(self, i: int):
        x, y = self.base[i][:2]
        return x, y, self.base[self.partner(i)][0]


@technique("distill.self", SelfKDConfig)
def apply_self_kd(model: nn.Module, config: SelfKDConfig, ctx: Context) -> nn.Module:
    """Return a copy of ``model`` fine-tuned with CS-KD; the input model is untouched."""
    data = require_data(ctx, "distill.self")
    student = fresh_copy(model)
    start = resolve_teacher(model, Context(), "distill.self")  # a frozen copy of the input

    def step(m: nn.Module, batch) -> torch.Tensor:
        x, y, x2 = batch
        logits = m(torch.cat([x, x2]))
        n = len(x)
        return cs_kd_loss(logits[:n], logits[n:], y, T=config.T, lam=config.lam)

    loader = train_loader(ClassPairs(data.train, seed=ctx.seed), ctx)
    log = fit_student(student, ctx, step=step, loader=loader, teacher=start,
                      patience=config.patience)
    split = eval_split(data)
    if config.report and split is not None:
        record(ctx, "distill.self", distill_report(start, student, start, split,
                                                   limit=eval_limit(ctx), epochs=log.epochs))
    student.eval()
    return student
