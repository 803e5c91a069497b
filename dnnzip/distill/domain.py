"""``distill.domain``: cross-domain distillation in the spirit of MobileDA (Yang et al. [67]).

MobileDA trains a large teacher on the source and target domains on a high-end machine and
trains the small on-device student on the target domain by distillation from it. Here:
1. the target domain is ``ctx.extra['target_data']`` (a DataBundle) or a shifted copy of
   ``ctx.data`` built by ``shift_domain`` (rotated, noisy or contrast-inverted inputs);
2. a copy of the teacher is fine-tuned for ``ctx.epochs`` on source ∪ target (cross-entropy; with
   ``target_labels=False`` the target part uses the source teacher's own predictions as labels);
3. the student is trained on the target train split by KD from the adapted teacher
   (alpha · T² · KL + (1 - alpha) · CE; soft targets only when the target is unlabelled).
Deviations from [67]: MobileDA's teacher uses domain-confusion losses on unlabelled target data;
we use plain joint training (labelled target) or self-labelling (unlabelled target), which is
simpler and already closes most of a synthetic shift. The report is measured on the *target*
domain's val/test split.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from dnnzip.config import check_choice, check_range
from dnnzip.distill.common import eval_limit, eval_split, frozen, require_data, resolve_teacher
from dnnzip.distill.halting import fit_student
from dnnzip.distill.kd import check_pair
from dnnzip.distill.losses import kd_loss, teacher_logits
from dnnzip.distill.report import accuracy, distill_report, predict, record
from dnnzip.errors import DataError, UnsupportedLayerError
from dnnzip.registry import Context, fresh_copy, technique

SHIFTS = ("rotate", "noise", "invert")
DEFAULT_SEVERITY = {"rotate": 45.0, "noise": 0.5, "invert": 1.0}


def rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate a (C, H, W) image about its centre (bilinear, zero fill)."""
    if x.dim() != 3:
        raise DataError(f"shift 'rotate' needs (channels, height, width) inputs, got shape "
                        f"{tuple(x.shape)}; use shift='noise' or 'invert' for other inputs.")
    a = math.radians(degrees)
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]],
                         dtype=x.dtype).unsqueeze(0)
    grid = F.affine_grid(theta, [1, *x.shape], align_corners=False)
    return F.grid_sample(x.unsqueeze(0), grid, align_corners=False).squeeze(0)


def integer_inputs(ds: Dataset):
    """The dtype of ``ds``'s inputs if they are integer tensors (token ids), else None; read from
    the first sample only."""
    x = ds[0][0] if len(ds) else None
    return x.dtype if isinstance(x, torch.Tensor) and not torch.is_floating_point(x) else None


class ShiftedDataset(Dataset):
    """A deterministic domain shift of ``base``: sample i always gets the same perturbation."""

    def __init__(self, base: Dataset, kind: str, severity: float, seed: int = 0):
        if kind not in SHIFTS:
            raise DataError(f"unknown domain shift {kind!r}; expected one of {', '.join(SHIFTS)}")
        dtype = integer_inputs(base)
        if dtype is not None:
            raise DataError("distill.domain's built-in shifts (rotate, noise, invert) act on "
                            f"float features; this dataset gives {dtype} inputs (e.g. token "
                            "ids). Pass the shifted target domain yourself as "
                            "ctx.extra['target_data'].")
        self.base, self.kind, self.severity, self.seed = base, kind, float(severity), seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y = self.base[i][:2]
        x = torch.as_tensor(x, dtype=torch.float32)
        if self.kind == "rotate":
            x = rotate(x, self.severity)
        elif self.kind == "noise":
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
            x = x + self.severity * torch.randn(x.shape, generator=gen)
        else:  # contrast inversion: the brightest pixel becomes the darkest
            x = x.max() + x.min() - x
        return x, y


def shift_domain(bundle: Any, kind: str, *, severity: float | None = None, seed: int = 0) -> Any:
    """A DataBundle whose every split is ``ShiftedDataset(split, kind, severity)``."""
    sev = DEFAULT_SEVERITY.get(kind, 0.0) if severity is None else severity
    splits = {name: ShiftedDataset(getattr(bundle, name), kind, sev, seed + k)
              for k, name in enumerate(("train", "val", "test", "calib"))
              if getattr(bundle, name, None) is not None}
    name = f"{getattr(bundle, 'name', 'data')}+{kind}"
    return with_splits(bundle, **splits, name=name)


class Relabeled(Dataset):
    def __init__(self, base: Dataset, labels: torch.Tensor):
        self.base, self.labels = base, labels

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        return self.base[i][0], self.labels[i]


@dataclass(frozen=True)
class DomainConfig:
    """Cross-domain distillation (MobileDA-style).

    shift: how the target domain is made from ctx.data when ctx.extra has no 'target_data':
        "rotate" (degrees), "noise" (Gaussian std), "invert" (contrast inversion).
    severity: strength of the shift (0 = the shift's default: 45°, std 0.5).
    target_labels: the target train split is labelled; False = unsupervised adaptation.
    adapt_teacher: fine-tune a copy of the teacher on source ∪ target first.
    T, alpha: KD temperature and soft-term weight for the student.
    """

    shift: str = "noise"
    severity: float = 0.0
    target_labels: bool = True
    adapt_teacher: bool = True
    T: float = 4.0
    alpha: float = 0.9

    def __post_init__(self):
        check_choice(self, "shift", SHIFTS)
        check_range(self, "severity", 0.0, None)
        check_range(self, "T", 0.0, None, left_open=True)
        check_range(self, "alpha", 0.0, 1.0)


def _ce_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor):
    return F.cross_entropy(logits, y)


def with_splits(bundle: Any, **splits: Any) -> Any:
    """``bundle`` with some splits replaced (a DataBundle stays a DataBundle)."""
    if dataclasses.is_dataclass(bundle):
        return dataclasses.replace(bundle, **splits)
    out = copy.copy(bundle)
    for key, value in splits.items():
        setattr(out, key, value)
    return out


def adapt(teacher: nn.Module, source: Any, target: Any, ctx: Context, labelled: bool) -> nn.Module:
    """Fine-tune a copy of ``teacher`` on source ∪ target (self-labelled target if unlabelled).

    Model selection uses the target val split when the target is labelled, else the source's.
    """
    model = copy.deepcopy(teacher)
    for p in model.parameters():
        p.requires_grad_(True)
    tgt = target.train
    if not labelled:
        tgt = Relabeled(tgt, predict(teacher, tgt)[0].argmax(-1))
    joint = with_splits(source, train=ConcatDataset([source.train, tgt]),
                        val=target.val if labelled else source.val)
    fit_student(model, dataclasses.replace(ctx, data=joint), loss_fn=_ce_loss)
    return frozen(model)


@technique("distill.domain", DomainConfig)
def apply_domain(model: nn.Module, config: DomainConfig, ctx: Context) -> nn.Module:
    """Return a copy of the student trained on the target domain by cross-domain distillation."""
    source = require_data(ctx, "distill.domain")
    dtype = integer_inputs(source.train)
    if ctx.extra.get("target_data") is None and dtype is not None:
        raise UnsupportedLayerError(  # a model kind the built-in shifts cannot serve
            f"distill.domain's built-in shifts act on float features, but this model takes "
            f"{dtype} inputs (e.g. token ids); pass the target domain as "
            "ctx.extra['target_data'].")
    target = ctx.extra.get("target_data") or shift_domain(
        source, config.shift, severity=config.severity or None, seed=ctx.seed)
    if len(target.train) == 0:
        raise DataError("distill.domain: the target domain's train split is empty")
    teacher = resolve_teacher(model, ctx, "distill.domain")
    student = fresh_copy(model)
    check_pair(student, teacher, ctx, "distill.domain")
    source_teacher = teacher
    if config.adapt_teacher:
        teacher = adapt(teacher, source, target, ctx, config.target_labels)

    labels = config.target_labels

    def loss_fn(m: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor):
        return kd_loss(logits, teacher_logits(teacher, x), y if labels else None,
                       T=config.T, alpha=config.alpha)

    # Unlabelled target: model selection on the source's val split (no target labels used).
    student_data = target if labels else with_splits(target, val=source.val)
    fit_student(student, dataclasses.replace(ctx, data=student_data), loss_fn=loss_fn)
    split = eval_split(target)
    if split is not None:
        limit = eval_limit(ctx)
        record(ctx, "distill.domain", distill_report(
            model, student, teacher, split, limit=limit, target=getattr(target, "name", "target"),
            source_teacher_accuracy=accuracy(*predict(source_teacher, split, limit=limit))))
    student.eval()
    return student
