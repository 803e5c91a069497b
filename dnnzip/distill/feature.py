"""``distill.feature``: hint / feature distillation with learned projections.

The student's intermediate features are pulled towards the teacher's (survey Fig. 9, layer-by-layer
distillation). Two distances:
- ``angular``: ShrinkTeaNet's angular distillation loss (Duong et al. [66], survey Eq. 24),
  (1 - cos(trans(F_t), trans(F_s)))², which matches feature *directions* and so tolerates the
  scale gap between a large teacher and a small student; here trans(F_t) = F_t and trans(F_s) is a
  learned projection of F_s to the teacher's size (the paper's student-side transform);
- ``hint``: FitNets' mean squared error after the same projection.
Loss: (1 - alpha) · CE + alpha · KD(T) + beta · Σ_pairs feature_loss. Projections (Linear for
(batch, features), 1×1 Conv for (batch, channels, *spatial) with equal spatial size) are trained
with the student and dropped afterwards: the output is the plain student.

Feature points: ``student_layers`` / ``teacher_layers`` name modules whose *outputs* are matched
(pairwise, same count); by default the *input* of each model's last ``nn.Linear`` (the
penultimate features) is matched.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dnnzip.config import check_choice, check_range, coerce_tuple
from dnnzip.distill.common import eval_limit, eval_split, require_data, resolve_teacher
from dnnzip.distill.halting import check_patience, fit_student
from dnnzip.distill.kd import check_pair
from dnnzip.distill.losses import angular_loss, hint_loss, kd_loss, teacher_logits
from dnnzip.distill.report import distill_report, record
from dnnzip.errors import ConfigError, UnsupportedLayerError
from dnnzip.registry import Context, fresh_copy, technique


@dataclass(frozen=True)
class FeatureConfig:
    """Feature (hint) distillation.

    loss: "angular" (ShrinkTeaNet Eq. 24) or "hint" (MSE).
    student_layers / teacher_layers: module names whose outputs are matched pairwise;
        both empty = the inputs of the last Linear layers.
    projection: learn a student→teacher projection where shapes differ; False requires equal shapes.
    beta: weight of the feature term. alpha, T: weight and temperature of a logits KD term
        (alpha=0 uses cross-entropy with the labels only).
    patience: early halting on validation agreement (0 = off).
    """

    loss: str = "angular"
    student_layers: tuple[str, ...] = ()
    teacher_layers: tuple[str, ...] = ()
    projection: bool = True
    beta: float = 1.0
    alpha: float = 0.0
    T: float = 4.0
    patience: int = 0

    def __post_init__(self):
        check_choice(self, "loss", ("angular", "hint"))
        coerce_tuple(self, "student_layers")
        coerce_tuple(self, "teacher_layers")
        if len(self.student_layers) != len(self.teacher_layers):
            raise ConfigError(
                "The 'student_layers' and 'teacher_layers' parameters of FeatureConfig must have "
                f"the same length (one teacher layer per student layer). Got "
                f"{len(self.student_layers)} and {len(self.teacher_layers)} instead.")
        check_range(self, "beta", 0.0, None)
        check_range(self, "alpha", 0.0, 1.0)
        check_range(self, "T", 0.0, None, left_open=True)
        check_patience(self)


def last_linear(model: nn.Module) -> str:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise UnsupportedLayerError(
            f"distill.feature: {type(model).__name__} has no nn.Linear layer to take penultimate "
            "features from; name the layers with student_layers= / teacher_layers=.")
    return names[-1]


class FeatureTap:
    """Forward hooks that record features of named modules (output, or input of the last Linear)."""

    def __init__(self, model: nn.Module, layers: tuple[str, ...]):
        self.feats: list[torch.Tensor | None] = []
        self.handles = []
        modules = dict(model.named_modules())
        points = [(n, "out") for n in layers] or [(last_linear(model), "in")]
        for slot, (name, where) in enumerate(points):
            if name not in modules:
                raise ConfigError(f"distill.feature: no module named {name!r} in "
                                  f"{type(model).__name__}; expected one of its named_modules().")
            self.feats.append(None)
            hook = self._in_hook(slot) if where == "in" else self._out_hook(slot)
            reg = modules[name].register_forward_pre_hook if where == "in" \
                else modules[name].register_forward_hook
            self.handles.append(reg(hook))

    def _in_hook(self, slot):
        def hook(module, args):
            self.feats[slot] = args[0]
        return hook

    def _out_hook(self, slot):
        def hook(module, args, out):
            self.feats[slot] = out[0] if isinstance(out, tuple) else out
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def make_projection(s: torch.Tensor, t: torch.Tensor, allowed: bool, where: str) -> nn.Module:
    if s.shape == t.shape:
        return nn.Identity()
    if not allowed:
        raise ConfigError(
            f"distill.feature: feature pair {where} has student shape {tuple(s.shape)} and teacher "
            f"shape {tuple(t.shape)}; expected equal shapes when projection=False. Fix: set "
            "projection=True or pick feature layers of equal size.")
    if s.dim() == 2 and t.dim() == 2:
        return nn.Linear(s.shape[1], t.shape[1])
    if s.dim() in (3, 4) and s.dim() == t.dim() and s.shape[2:] == t.shape[2:]:
        conv = nn.Conv1d if s.dim() == 3 else nn.Conv2d
        return conv(s.shape[1], t.shape[1], kernel_size=1)
    raise ConfigError(
        f"distill.feature: cannot project feature pair {where} from {tuple(s.shape)} to "
        f"{tuple(t.shape)}; a projection maps channels (Linear or 1x1 conv) and needs equal "
        "spatial sizes. Fix: choose layers with the same spatial resolution.")


@technique("distill.feature", FeatureConfig)
def apply_feature(model: nn.Module, config: FeatureConfig, ctx: Context) -> nn.Module:
    """Return a copy of the student trained to match the teacher's features (and logits)."""
    data = require_data(ctx, "distill.feature")
    teacher = resolve_teacher(model, ctx, "distill.feature")
    student = fresh_copy(model)
    check_pair(student, teacher, ctx, "distill.feature")
    s_tap = FeatureTap(student, config.student_layers)
    t_tap = FeatureTap(teacher, config.teacher_layers)
    try:
        x = ctx.example()
        with torch.no_grad():
            student.eval(), student(x), teacher(x)
        projections = nn.ModuleList(
            make_projection(s, t, config.projection, f"#{i}")
            for i, (s, t) in enumerate(zip(s_tap.feats, t_tap.feats)))
        distance = angular_loss if config.loss == "angular" else hint_loss

        def step(m: nn.Module, batch) -> torch.Tensor:
            xb, yb = batch[0], batch[1]
            logits = m(xb)
            t_logits = teacher_logits(teacher, xb)
            if config.alpha > 0:
                loss = kd_loss(logits, t_logits, yb, T=config.T, alpha=config.alpha)
            else:
                loss = F.cross_entropy(logits, yb)
            for proj, s, t in zip(projections, s_tap.feats, t_tap.feats):
                loss = loss + config.beta * distance(proj(s), t)
            return loss

        log = fit_student(student, ctx, step=step, extra_params=projections.parameters(),
                          teacher=teacher, patience=config.patience)
    finally:
        s_tap.remove()
        t_tap.remove()
    split = eval_split(data)
    if split is not None:
        record(ctx, "distill.feature", distill_report(model, student, teacher, split,
                                                      limit=eval_limit(ctx), epochs=log.epochs))
    student.eval()
    return student
