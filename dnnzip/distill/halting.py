"""The student training loop with early halting on teacher agreement.

The survey's remark on logits transfer (Sec. VI-A) names the open question of *when to stop*: a
student trained too long mimics the teacher's exact predictions and loses generalisation, and
Eq. 23's ∇ → 0 is never reached. ``fit_student`` answers it operationally: after every epoch it
measures the top-1 agreement with the teacher on the validation split and stops when that has not
improved by more than ``min_delta`` for ``patience`` epochs, restoring the best epoch's weights.

``fit_student`` is the one training function of this package. Plain steps (one ``loss_fn``, no
halting, no extra parameters) go to ``dnnzip.train.finetune`` when that module exists; steps that
need paired batches (CS-KD), cached per-sample targets (RONA), learned projections (hints) or
halting run the local loop below, which honours the same ``Context`` settings
(epochs, batch_size, lr, max_batches, seed) with the trainer's Adam + per-step cosine schedule.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader

from dnnzip.distill.common import eval_limit, eval_split, train_loader
from dnnzip.distill.report import match_rate, predict
from dnnzip.errors import ConfigError
from dnnzip.registry import Context

StepLoss = Callable[[nn.Module, Any], torch.Tensor]


@dataclass
class FitLog:
    """What the loop did: epochs run, per-epoch mean loss and validation agreement."""

    epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    halted: bool = False
    trainer: str = "local"


def check_patience(obj: Any) -> None:
    value = getattr(obj, "patience")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"The 'patience' parameter of {type(obj).__name__} must be an int in "
                          f"[0, inf] (0 = no halting). Got {value!r} instead.")


def _trainer_finetune() -> Callable | None:
    try:
        from dnnzip.train import finetune  # type: ignore[attr-defined]
    except ImportError:
        return None
    return finetune


def logits_step(loss_fn: Callable) -> StepLoss:
    """Adapt a trainer-style ``loss_fn(model, x, y, logits)`` to a step on an ``(x, y)`` batch."""

    def step(model: nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch[0], batch[1]
        return loss_fn(model, x, y, model(x))

    return step


def fit_student(student: nn.Module, ctx: Context, *, loss_fn: Callable | None = None,
                step: StepLoss | None = None, loader: DataLoader | None = None,
                extra_params: Iterable[nn.Parameter] = (), teacher: nn.Module | None = None,
                patience: int = 0, min_delta: float = 0.0) -> FitLog:
    """Train ``student`` in place for ``ctx.epochs`` epochs; see the module docstring."""
    if (step is None) == (loss_fn is None):
        raise ConfigError("fit_student takes exactly one of loss_fn= or step=")
    extra_params = list(extra_params)
    if ctx.epochs <= 0:
        return FitLog()
    plain = step is None and loader is None and not extra_params and patience == 0
    finetune = _trainer_finetune() if plain else None
    if finetune is not None:
        result = finetune(student, ctx, loss_fn=loss_fn)
        history = [{"epoch": h.epoch - 1, "loss": h.train_loss, "val_score": h.val_score}
                   for h in getattr(result, "history", [])]
        return FitLog(epochs=len(history) or ctx.epochs, history=history,
                      best_epoch=getattr(result, "best_epoch", 0) - 1,
                      halted=bool(getattr(result, "stopped_early", False)), trainer="dnnzip.train")
    step = step or logits_step(loss_fn)
    loader = loader or train_loader(ctx.data.train, ctx)
    halting = HaltingMonitor(teacher, ctx, patience, min_delta) if patience > 0 else None
    params = [p for p in student.parameters() if p.requires_grad] + extra_params
    opt = torch.optim.Adam(params, lr=ctx.lr)
    torch.manual_seed(ctx.seed)
    steps = len(loader) if ctx.max_batches is None else min(len(loader), ctx.max_batches)
    schedule = cosine(ctx.lr, ctx.epochs * max(steps, 1))
    log = FitLog()
    for epoch in range(ctx.epochs):
        student.train()
        total, count = 0.0, 0
        for i, batch in enumerate(loader):
            if i >= steps:
                break
            for group in opt.param_groups:
                group["lr"] = schedule(epoch * steps + i)
            loss = step(student, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, count = total + float(loss.detach()), count + 1
        row = {"epoch": epoch, "loss": total / max(count, 1)}
        log.epochs = epoch + 1
        if halting is not None:
            row["agreement"] = halting.update(student, epoch)
            log.history.append(row)
            if halting.should_stop():
                log.halted = epoch + 1 < ctx.epochs
                break
        else:
            log.history.append(row)
    if halting is not None:
        halting.restore_best(student)
        log.best_epoch = halting.best_epoch
    else:
        log.best_epoch = log.epochs - 1
    student.eval()
    return log


def cosine(lr: float, total: int) -> Callable[[int], float]:
    """Per-step cosine decay from ``lr`` to 0, the trainer's default schedule."""
    return lambda t: lr * 0.5 * (1.0 + math.cos(math.pi * min(t, total) / total))


class HaltingMonitor:
    """Tracks validation agreement with the teacher; keeps the best weights seen."""

    def __init__(self, teacher: nn.Module | None, ctx: Context, patience: int, min_delta: float):
        split = eval_split(ctx.data) if ctx.data is not None else None
        if teacher is None or split is None:
            raise ConfigError("early halting (patience > 0) needs a teacher and a val or test "
                              "split in ctx.data; set patience=0 to train for ctx.epochs")
        self.dataset, self.limit = split, eval_limit(ctx)
        self.teacher_logits, _ = predict(teacher, split, limit=self.limit)
        self.patience, self.min_delta = patience, min_delta
        self.best, self.best_epoch, self.best_state, self.stale = -1.0, -1, None, 0

    def update(self, student: nn.Module, epoch: int) -> float:
        logits, _ = predict(student, self.dataset, limit=self.limit)
        score = match_rate(logits, self.teacher_logits)
        if score > self.best + self.min_delta:
            self.best, self.best_epoch, self.stale = score, epoch, 0
            self.best_state = copy.deepcopy(student.state_dict())
        else:
            self.stale += 1
        return score

    def should_stop(self) -> bool:
        return self.stale >= self.patience

    def restore_best(self, student: nn.Module) -> None:
        if self.best_state is not None:
            student.load_state_dict(self.best_state)
