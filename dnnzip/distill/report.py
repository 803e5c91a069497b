"""What distillation did to a student, in numbers (after Cheng et al. [64]).

[64] explains distillation by how much of the teacher's knowledge the student takes up. We report
the two observable proxies a deployment cares about: the student-teacher agreement (how often the
top-1 predictions match) and calibration (expected calibration error, 15 equal-width confidence
bins, Guo et al. 2017), each before and after distillation, plus plain accuracy.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dnnzip.distill.common import limited
from dnnzip.registry import Context


def predict(model: nn.Module, dataset: Dataset, *, limit: int | None = None,
            batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) of ``model`` on ``dataset`` in eval mode; the training flag is restored."""
    was_training = model.training
    model.eval()
    outs, ys = [], []
    try:
        with torch.no_grad():
            for batch in DataLoader(limited(dataset, limit), batch_size=batch_size):
                outs.append(model(batch[0]))
                ys.append(torch.as_tensor(batch[1]).long())
    finally:
        model.train(was_training)
    if not outs:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.cat(outs), torch.cat(ys)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(-1) == labels).float().mean()) if len(labels) else float("nan")


def match_rate(a: torch.Tensor, b: torch.Tensor) -> float:
    """Top-1 agreement between two sets of logits for the same samples."""
    return float((a.argmax(-1) == b.argmax(-1)).float().mean()) if len(a) else float("nan")


def ece(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """Expected calibration error: Σ_b |B_b|/N · |acc(B_b) - conf(B_b)| over confidence bins."""
    if len(labels) == 0:
        return float("nan")
    probs = torch.softmax(logits.float(), dim=-1)
    conf, pred = probs.max(dim=-1)
    correct = (pred == labels).float()
    edges = torch.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi) if lo > 0 else (conf >= lo) & (conf <= hi)
        if inside.any():
            total += float(inside.float().mean()) * abs(float(correct[inside].mean())
                                                       - float(conf[inside].mean()))
    return total


@dataclass
class DistillReport:
    """Student vs teacher before and after one distillation step, on one evaluation split."""

    samples: int
    teacher_accuracy: float
    accuracy_before: float
    accuracy_after: float
    agreement_before: float
    agreement_after: float
    ece_before: float
    ece_after: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def distill_report(before: nn.Module, after: nn.Module, teacher: nn.Module, dataset: Dataset,
                   *, limit: int | None = None, **extra: Any) -> DistillReport:
    t_logits, y = predict(teacher, dataset, limit=limit)
    b_logits, _ = predict(before, dataset, limit=limit)
    a_logits, _ = predict(after, dataset, limit=limit)
    return DistillReport(
        samples=len(y), teacher_accuracy=accuracy(t_logits, y),
        accuracy_before=accuracy(b_logits, y), accuracy_after=accuracy(a_logits, y),
        agreement_before=match_rate(b_logits, t_logits), agreement_after=match_rate(a_logits, t_logits),
        ece_before=ece(b_logits, y), ece_after=ece(a_logits, y), extra=dict(extra))


def record(ctx: Context, name: str, report: DistillReport | dict[str, Any]) -> None:
    """Keep a technique's report in ``ctx.extra['distill'][name]`` for the recipe's report."""
    value = report.to_dict() if isinstance(report, DistillReport) else dict(report)
    ctx.extra.setdefault("distill", {})[name] = value
