"""``distill.private``: distillation from a privacy-perturbed teacher, after RONA (Wang et al. [60]).

RONA compresses a model trained on sensitive data by distilling it into a student while the
teacher's knowledge is perturbed so that the student (and whoever holds it) learns little about
any single sensitive record. Here the teacher's tempered soft targets softmax(t/T) are released
through a calibrated noise mechanism before the student sees them:
- Laplace: per-coordinate scale b = Δ₁/ε with Δ₁ = 2 (the largest L1 distance of two probability
  vectors) — ε-DP per released vector;
- Gaussian: σ = Δ₂ √(2 ln(1.25/δ)) / ε with Δ₂ = √2 — (ε, δ)-DP per released vector (ε < 1 for
  the classical bound; larger ε are accepted and labelled as such in the report).
The noisy vector is clipped at 0 and renormalised (post-processing keeps the guarantee). Each
training sample's teacher output is released *once* and cached, so more epochs do not spend more
privacy. Deviations from [60]: RONA perturbs the distillation loss and also uses hint and self
learning with query sampling; we perturb the released soft targets (the brief's "teacher outputs
perturbed"), and we do not run a privacy accountant across samples — ε is per released vector.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from dnnzip.config import check_choice, check_range
from dnnzip.distill.common import (Indexed, eval_limit, eval_split, require_data, resolve_teacher,
                                   train_loader)
from dnnzip.distill.halting import fit_student
from dnnzip.distill.kd import check_pair
from dnnzip.distill.losses import kd_loss_probs, teacher_logits
from dnnzip.distill.report import distill_report, record
from dnnzip.registry import Context, fresh_copy, technique


@dataclass(frozen=True)
class PrivateConfig:
    """Distillation through a noise mechanism on the teacher's soft targets.

    mechanism: "gaussian" or "laplace".
    epsilon: privacy parameter ε per released soft-target vector (> 0; smaller = more noise).
    delta: δ of the Gaussian mechanism.
    T, alpha: KD temperature and weight of the (noisy) soft term.
    """

    mechanism: str = "gaussian"
    epsilon: float = 1.0
    delta: float = 1e-5
    T: float = 4.0
    alpha: float = 0.9

    def __post_init__(self):
        check_choice(self, "mechanism", ("gaussian", "laplace"))
        check_range(self, "epsilon", 0.0, None, left_open=True)
        check_range(self, "delta", 0.0, 1.0, left_open=True, right_open=True)
        check_range(self, "T", 0.0, None, left_open=True)
        check_range(self, "alpha", 0.0, 1.0)


def noise_scale(config: PrivateConfig) -> float:
    """Laplace b or Gaussian σ calibrated to the sensitivity of a probability vector."""
    if config.mechanism == "laplace":
        return 2.0 / config.epsilon
    return math.sqrt(2.0) * math.sqrt(2.0 * math.log(1.25 / config.delta)) / config.epsilon


def perturb(probs: torch.Tensor, config: PrivateConfig, gen: torch.Generator) -> torch.Tensor:
    """Release ``probs`` (rows sum to 1) through the mechanism; result rows are distributions."""
    scale = noise_scale(config)
    if config.mechanism == "laplace":
        u = torch.rand(probs.shape, generator=gen, dtype=probs.dtype) - 0.5
        noise = -scale * torch.sign(u) * torch.log1p(-2.0 * u.abs())
    else:
        noise = scale * torch.randn(probs.shape, generator=gen, dtype=probs.dtype)
    noisy = (probs + noise).clamp_min(0.0)
    total = noisy.sum(-1, keepdim=True)
    uniform = torch.full_like(noisy, 1.0 / noisy.shape[-1])
    return torch.where(total > 0, noisy / total.clamp_min(1e-12), uniform)


class NoisyTargets:
    """Per-sample cache: the teacher is queried once per training index."""

    def __init__(self, teacher: nn.Module, config: PrivateConfig, seed: int):
        self.teacher, self.config = teacher, config
        self.gen = torch.Generator().manual_seed(seed)
        self.cache: dict[int, torch.Tensor] = {}

    def __call__(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        keys = [int(i) for i in idx]
        missing = [k for k, key in enumerate(keys) if key not in self.cache]
        if missing:
            probs = torch.softmax(teacher_logits(self.teacher, x[missing]) / self.config.T, -1)
            for k, row in zip(missing, perturb(probs, self.config, self.gen)):
                self.cache[keys[k]] = row
        return torch.stack([self.cache[key] for key in keys])


@technique("distill.private", PrivateConfig)
def apply_private(model: nn.Module, config: PrivateConfig, ctx: Context) -> nn.Module:
    """Return a copy of the student distilled from noise-perturbed teacher soft targets."""
    data = require_data(ctx, "distill.private")
    teacher = resolve_teacher(model, ctx, "distill.private")
    student = fresh_copy(model)
    check_pair(student, teacher, ctx, "distill.private")
    targets = NoisyTargets(teacher, config, ctx.seed)

    def step(m: nn.Module, batch) -> torch.Tensor:
        x, y, idx = batch
        return kd_loss_probs(m(x), targets(x, idx), y, T=config.T, alpha=config.alpha)

    fit_student(student, ctx, step=step, loader=train_loader(Indexed(data.train), ctx))
    split = eval_split(data)
    if split is not None:
        record(ctx, "distill.private", distill_report(
            model, student, teacher, split, limit=eval_limit(ctx), mechanism=config.mechanism,
            epsilon=config.epsilon, noise_scale=noise_scale(config),
            released=len(targets.cache), classical_bound=config.mechanism == "laplace"
            or config.epsilon < 1.0))
    student.eval()
    return student
