"""Distillation losses, each a plain function of tensors.

- ``kd_loss``: Hinton et al. [61], survey Eq. 21 (softmax at temperature T) and Eq. 22 (the
  gradient of the soft cross-entropy is (p - q)/T, so the soft term is scaled by T² to keep its
  gradient on the same scale as the hard term's when T changes).
- ``cs_kd_loss``: CS-KD, Yun et al. [62], the survey's combined loss
  L = CE(x, y) + λ T² KL(P(y|x'; T) || P(y|x; T)) with x' another sample of class y.
- ``angular_loss``: ShrinkTeaNet, Duong et al. [66], survey Eq. 24:
  ||1 - (t/||t||) · (s/||s||)||² averaged over the batch.
- ``hint_loss``: FitNets-style mean squared error between (projected) features.

``kd_loss_fn(teacher, T, alpha)`` wraps ``kd_loss`` into the trainer's
``loss_fn(model, x, y, logits)`` hook so any recipe step can fine-tune with distillation.
``kd_loss_fn(..., cache=data.train)`` precomputes the teacher's logits on that split once
(``CachedTeacher``), so a KD epoch costs about what a cross-entropy epoch costs (one digest per
input instead of a teacher forward pass); valid because the teacher is frozen and the inputs are
not augmented (an input not in the cache, e.g. an augmented or a validation image, falls back to
a teacher forward pass, so the result is the same either way).
"""
from __future__ import annotations

import copy
import hashlib
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dnnzip.errors import ConfigError, DataError


def check_temperature(T: float, where: str = "distillation") -> None:
    if isinstance(T, bool) or not isinstance(T, (int, float)) or not T > 0 or T != T:
        raise ConfigError(
            f"{where}: the temperature T must be a float > 0 (survey Eq. 21 divides by it). "
            f"Got {T!r} instead; use e.g. T=4.0."
        )


def check_logits(student: torch.Tensor, teacher: torch.Tensor, where: str = "distillation") -> None:
    """Teacher and student must predict over the same classes for the same batch."""
    if student.shape != teacher.shape:
        raise ConfigError(
            f"{where}: teacher output shape {tuple(teacher.shape)} differs from the student's "
            f"{tuple(student.shape)}; expected both (batch, num_classes) over the same classes. "
            "Fix: use a teacher trained on the same label set (same num_classes)."
        )


def soft_kl(student_logits: torch.Tensor, target_probs: torch.Tensor, T: float) -> torch.Tensor:
    """KL(target || softmax(student/T)) per batch (mean over samples), times T²."""
    log_p = F.log_softmax(student_logits / T, dim=-1)
    return F.kl_div(log_p, target_probs, reduction="batchmean") * (T * T)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor | None,
            *, T: float = 4.0, alpha: float = 0.9) -> torch.Tensor:
    """alpha · T² · KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) · CE(s, y)  (Hinton [61]).

    With ``y=None`` (unlabelled data) only the soft term is used.
    """
    check_temperature(T, "kd_loss")
    check_logits(student_logits, teacher_logits, "kd_loss")
    soft = soft_kl(student_logits, F.softmax(teacher_logits.detach() / T, dim=-1), T)
    if y is None or alpha >= 1.0:
        return soft if y is None else alpha * soft
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(student_logits, y)


def kd_loss_probs(student_logits: torch.Tensor, teacher_probs: torch.Tensor, y: torch.Tensor | None,
                  *, T: float, alpha: float) -> torch.Tensor:
    """``kd_loss`` with the teacher given as (possibly noisy) probabilities, as RONA needs."""
    check_temperature(T, "kd_loss_probs")
    check_logits(student_logits, teacher_probs, "kd_loss_probs")
    soft = soft_kl(student_logits, teacher_probs.detach(), T)
    if y is None:
        return soft
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(student_logits, y)


def cs_kd_loss(logits: torch.Tensor, pair_logits: torch.Tensor, y: torch.Tensor,
               *, T: float = 4.0, lam: float = 1.0) -> torch.Tensor:
    """CE(x, y) + λ T² KL(P(·|x'; T) || P(·|x; T)); x' is detached as in CS-KD [62]."""
    check_temperature(T, "cs_kd_loss")
    check_logits(logits, pair_logits, "cs_kd_loss")
    target = F.softmax(pair_logits.detach() / T, dim=-1)
    return F.cross_entropy(logits, y) + lam * soft_kl(logits, target, T)


def angular_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """Angular distillation loss, survey Eq. 24: mean over samples of (1 - cos(t, s))²."""
    check_features(student_feat, teacher_feat, "angular_loss")
    s = F.normalize(student_feat.flatten(1), dim=1)
    t = F.normalize(teacher_feat.detach().flatten(1), dim=1)
    return ((1.0 - (s * t).sum(dim=1)) ** 2).mean()


def hint_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """Mean squared error between features of equal shape (FitNets hint)."""
    check_features(student_feat, teacher_feat, "hint_loss")
    return F.mse_loss(student_feat, teacher_feat.detach())


def check_features(student_feat: torch.Tensor, teacher_feat: torch.Tensor, where: str) -> None:
    if student_feat.shape != teacher_feat.shape:
        raise ConfigError(
            f"{where}: student feature shape {tuple(student_feat.shape)} does not match the "
            f"teacher's {tuple(teacher_feat.shape)}; expected equal shapes. Fix: enable a learned "
            "projection (projection=True) or choose feature layers of equal size."
        )


def teacher_logits(teacher: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The teacher's logits without gradients (the teacher is never trained by a student step)."""
    with torch.no_grad():
        return teacher(x)


def _row_keys(x: torch.Tensor) -> list[bytes]:
    """One 16-byte digest of the exact bytes of each sample of the batch ``x``."""
    rows = x.detach().to("cpu", torch.float32).contiguous().flatten(1).numpy()
    return [hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in rows]


class CachedTeacher(nn.Module):
    """A frozen teacher whose logits on ``dataset`` are computed once and then looked up.

    Hinton et al. [61] train the student on the teacher's soft targets over a fixed transfer set;
    with a frozen, eval-mode teacher and un-augmented inputs those targets never change, so
    computing them once gives the same loss as querying the teacher every step, at the cost of
    one teacher pass over the data instead of one per epoch.
    The key is a digest of each input's exact bytes, so the lookup works through any shuffling
    or batching of the same samples (``dnnzip.train.fit``'s loader included); identical inputs
    share one entry, which is right since a frozen eval-mode teacher maps them to the same logits.
    Inputs that are not in the cache are sent through the teacher (counted in ``misses``).
    """

    def __init__(self, teacher: nn.Module, dataset: Dataset, *, batch_size: int = 512):
        super().__init__()
        if not isinstance(teacher, nn.Module):
            raise ConfigError(f"CachedTeacher: the teacher must be an nn.Module, got "
                              f"{type(teacher).__name__}")
        try:
            n = len(dataset)  # type: ignore[arg-type]
        except TypeError:
            raise ConfigError("CachedTeacher: cache= must be a sized Dataset of (x, y) samples "
                              f"(e.g. data.train), got {type(dataset).__name__}.") from None
        if n == 0:
            raise DataError("CachedTeacher: the dataset to cache is empty; pass the training "
                            "split the student is trained on (e.g. data.train).")
        self.teacher = teacher.eval()
        self.hits = self.misses = 0
        self._rows: dict[bytes, int] = {}  # input digest -> row of self.logits (first occurrence)
        chunks, pos = [], 0
        dev = next((p.device for p in teacher.parameters()), torch.device("cpu"))
        with torch.no_grad():
            for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
                x = batch[0]
                chunks.append(self.teacher(x.to(dev)).float().cpu())
                for key in _row_keys(x):
                    self._rows.setdefault(key, pos)
                    pos += 1
        self.logits = torch.cat(chunks)

    def train(self, mode: bool = True) -> "CachedTeacher":
        # the wrapped teacher stays in eval mode whatever the caller asks
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keys = _row_keys(x)
        found = [self._rows.get(k) for k in keys]
        missing = [i for i, r in enumerate(found) if r is None]
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        if not missing:
            return self.logits[found].to(x.device)
        with torch.no_grad():
            fresh = self.teacher(x[missing]).float()
        out = torch.empty(len(keys), self.logits.shape[1], device=x.device)
        hit = [i for i, r in enumerate(found) if r is not None]
        if hit:
            out[hit] = self.logits[[found[i] for i in hit]].to(x.device)
        out[missing] = fresh.to(x.device)
        return out


def kd_loss_fn(teacher: nn.Module, T: float = 4.0, alpha: float = 0.9, *,
               temperature: float | None = None, cache: Dataset | None = None) -> Callable:
    """A ``loss_fn(model, x, y, logits)`` for ``dnnzip.train.fit``: Hinton KD against ``teacher``.

    ``temperature`` is an alias of ``T`` (recipe steps spell it out). The hook uses a private
    eval-mode copy of the teacher, so neither its weights nor its training flag change.
    ``cache``: a dataset (normally the training split, un-augmented) whose teacher logits are
    precomputed once (``CachedTeacher``); the loss is the same, only cheaper. The hook's
    ``.teacher`` attribute is the (cached) teacher it queries.
    """
    if temperature is not None:
        T = temperature
    check_temperature(T, "kd_loss_fn")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"kd_loss_fn: alpha must be a float in [0, 1]. Got {alpha!r} instead.")
    if not isinstance(teacher, nn.Module):
        raise ConfigError(f"kd_loss_fn: the teacher must be an nn.Module, got {type(teacher).__name__}")
    frozen = copy.deepcopy(teacher).eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    if cache is not None:
        frozen = CachedTeacher(frozen, cache)

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor):
        return kd_loss(logits, teacher_logits(frozen, x), y, T=T, alpha=alpha)

    loss_fn.teacher = frozen  # type: ignore[attr-defined]
    return loss_fn
