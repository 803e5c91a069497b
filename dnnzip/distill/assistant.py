"""``distill.assistant``: teacher-assistant knowledge distillation, TAKD (Mirzadeh et al. [65]).

When the teacher is much larger than the student, plain KD transfers poorly; TAKD distils the
teacher into an intermediate-size assistant first and the assistant into the student
(teacher → A₁ → … → A_k → student). Each assistant starts from fresh weights and is trained by KD
from the previous model for ``ctx.epochs``; the student, which is given, is trained from its
current weights.

The assistant is chosen between the two models:
1. ``assistant="zoo_name"`` or ``"zoo_name:width=0.5,hidden=64"`` builds it from the zoo;
2. else, if teacher and student are the same zoo model with different numeric kwargs (a width
   multiplier, hidden sizes), those kwargs are interpolated;
3. else, if teacher and student have the same module tree with different widths (e.g. the student
   is a channel-pruned teacher), every Linear/Conv/BatchNorm/LayerNorm/GRU/LSTM width is
   interpolated: w = s + round(r · (t - s)) at position r ∈ (0, 1) (k assistants sit at
   r = k/(k+1), …, 1/(k+1)); input sizes follow from one forward pass (lazy modules).
Otherwise a ``ConfigError`` asks for ``assistant=``. ``compare=True`` also trains plain KD with
the same budget and records in ``ctx.extra['distill']['distill.assistant']`` whether TAKD helped.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dnnzip.config import check_range
from dnnzip.distill.common import eval_limit, eval_split, frozen, require_data, resolve_teacher
from dnnzip.distill.kd import check_pair, distill
from dnnzip.distill.report import accuracy, distill_report, predict, record
from dnnzip.errors import ConfigError, UnsupportedLayerError
from dnnzip.registry import Context, fresh_copy, technique

_RESIZABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm,
              nn.GRU, nn.LSTM)


@dataclass(frozen=True)
class AssistantConfig:
    """TAKD chain teacher → assistant(s) → student.

    assistant: zoo spec of the assistant ("name" or "name:key=value,..."); "" = interpolate.
    steps: number of assistants in the chain (>= 1).
    T, alpha: KD temperature and soft-term weight for every link of the chain.
    compare: also train the student by plain KD from the teacher and record which was better.
    """

    assistant: str = ""
    steps: int = 1
    T: float = 4.0
    alpha: float = 0.9
    compare: bool = False

    def __post_init__(self):
        if not isinstance(self.assistant, str):
            raise ConfigError("The 'assistant' parameter of AssistantConfig must be a str. "
                              f"Got {self.assistant!r} instead.")
        check_range(self, "steps", 1, 8, integer=True)
        check_range(self, "T", 0.0, None, left_open=True)
        check_range(self, "alpha", 0.0, 1.0)


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """'vgg_bn:width=0.5,num_classes=10' → ('vgg_bn', {'width': 0.5, 'num_classes': 10})."""
    name, _, rest = spec.partition(":")
    kwargs: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"assistant spec {spec!r}: expected 'name:key=value,...', got {item!r}")
        try:
            kwargs[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key.strip()] = value.strip()
    return name.strip(), kwargs


def _zoo_build(name: str, kwargs: dict[str, Any]) -> nn.Module:
    try:
        from dnnzip.zoo import build  # type: ignore[attr-defined]
    except ImportError:
        raise ConfigError(f"assistant={name!r} needs dnnzip.zoo, which is not available") from None
    return build(name, **kwargs)


def _mix(s: float, t: float, r: float) -> Any:
    value = s + r * (t - s)
    return int(round(value)) if isinstance(s, int) and isinstance(t, int) else value


def _from_zoo_refs(student: nn.Module, teacher: nn.Module, r: float) -> nn.Module | None:
    rs, rt = getattr(student, "_dnnzip_ref", None), getattr(teacher, "_dnnzip_ref", None)
    if not (isinstance(rs, dict) and isinstance(rt, dict)) or "zoo" not in rs:
        return None
    ks, kt = rs.get("kwargs", {}), rt.get("kwargs", {})
    if rs.get("zoo") != rt.get("zoo") or set(ks) != set(kt) or ks == kt:
        return None
    mixed = {}
    for key in ks:
        a, b = ks[key], kt[key]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
        if a == b:
            mixed[key] = a
        elif numeric:
            mixed[key] = _mix(a, b, r)
        else:
            return None
    return _zoo_build(rs["zoo"], mixed)


def _lazy_twin(s: nn.Module, t: nn.Module, r: float, name: str) -> nn.Module:
    if isinstance(s, nn.Linear):
        return nn.LazyLinear(_mix(s.out_features, t.out_features, r), bias=s.bias is not None)
    if isinstance(s, (nn.Conv1d, nn.Conv2d)):
        if s.groups != 1 or t.groups != 1:
            raise UnsupportedLayerError(
                f"'{name}' ({type(s).__name__}, groups={s.groups}) cannot be width-interpolated "
                "for an assistant; pass assistant='zoo_name:...' to distill.assistant.")
        lazy = nn.LazyConv1d if isinstance(s, nn.Conv1d) else nn.LazyConv2d
        return lazy(_mix(s.out_channels, t.out_channels, r), s.kernel_size, stride=s.stride,
                    padding=s.padding, dilation=s.dilation, bias=s.bias is not None,
                    padding_mode=s.padding_mode)
    if isinstance(s, (nn.BatchNorm1d, nn.BatchNorm2d)):
        lazy = nn.LazyBatchNorm1d if isinstance(s, nn.BatchNorm1d) else nn.LazyBatchNorm2d
        return lazy(eps=s.eps, momentum=s.momentum, affine=s.affine)
    if isinstance(s, nn.LayerNorm):
        shape = [_mix(a, b, r) for a, b in zip(s.normalized_shape, t.normalized_shape)]
        return nn.LayerNorm(shape, eps=s.eps, elementwise_affine=s.elementwise_affine)
    cls = type(s)  # GRU / LSTM
    return cls(_mix(s.input_size, t.input_size, r), _mix(s.hidden_size, t.hidden_size, r),
               num_layers=s.num_layers, bias=s.bias, batch_first=s.batch_first,
               dropout=s.dropout, bidirectional=s.bidirectional)


def interpolate(student: nn.Module, teacher: nn.Module, r: float, example: torch.Tensor) -> nn.Module:
    """A freshly initialised model whose layer widths sit at position ``r`` between the two."""
    s_mods, t_mods = dict(student.named_modules()), dict(teacher.named_modules())
    for name, m in s_mods.items():
        other = t_mods.get(name)
        if isinstance(m, _RESIZABLE) and (other is None or type(other) is not type(m)):
            raise ConfigError(
                f"distill.assistant: teacher and student differ in structure at '{name}' "
                f"(student {type(m).__name__}, teacher {type(other).__name__ if other else 'none'}); "
                "cannot interpolate an assistant. Fix: pass assistant='zoo_name:key=value,...'.")
    mid = copy.deepcopy(student)
    for name, m in list(mid.named_modules()):
        if isinstance(m, _RESIZABLE):
            parent_name, _, leaf = name.rpartition(".")
            parent = mid.get_submodule(parent_name) if parent_name else mid
            setattr(parent, leaf, _lazy_twin(m, t_mods[name], r, name))
    mid.eval()
    with torch.no_grad():
        mid(example)  # materialises the lazy modules into plain Linear/Conv/BatchNorm
    for m in mid.modules():
        reset = getattr(m, "reset_parameters", None)
        if m is not mid and callable(reset) and not any(True for _ in m.children()):
            reset()
    return mid


def build_assistant(student: nn.Module, teacher: nn.Module, r: float, config: AssistantConfig,
                    example: torch.Tensor) -> nn.Module:
    if config.assistant:
        name, kwargs = parse_spec(config.assistant)
        return _zoo_build(name, kwargs)
    return _from_zoo_refs(student, teacher, r) or interpolate(student, teacher, r, example)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@technique("distill.assistant", AssistantConfig)
def apply_assistant(model: nn.Module, config: AssistantConfig, ctx: Context) -> nn.Module:
    """Return a copy of the student trained through a chain of teacher assistants."""
    data = require_data(ctx, "distill.assistant")
    teacher = resolve_teacher(model, ctx, "distill.assistant")
    example = ctx.example()
    student = fresh_copy(model)
    check_pair(student, teacher, ctx, "distill.assistant")
    current, chain = teacher, []
    for k in range(config.steps, 0, -1):
        r = k / (config.steps + 1)
        torch.manual_seed(ctx.seed + k)
        assistant = build_assistant(model, teacher, r, config, example)
        check_pair(assistant, current, ctx, "distill.assistant (assistant)")
        distill(assistant, current, ctx, T=config.T, alpha=config.alpha)
        current = frozen(assistant)
        chain.append({"position": r, "params": n_params(assistant)})
    distill(student, current, ctx, T=config.T, alpha=config.alpha)
    split = eval_split(data)
    if split is not None:
        limit = eval_limit(ctx)
        extra: dict[str, Any] = {"chain": chain, "teacher_params": n_params(teacher),
                                 "student_params": n_params(student)}
        extra["assistant_accuracy"] = accuracy(*predict(current, split, limit=limit))
        if config.compare:
            plain = fresh_copy(model)
            distill(plain, teacher, ctx, T=config.T, alpha=config.alpha)
            extra["plain_kd_accuracy"] = accuracy(*predict(plain, split, limit=limit))
            extra["takd_accuracy"] = accuracy(*predict(student, split, limit=limit))
            extra["helped"] = extra["takd_accuracy"] > extra["plain_kd_accuracy"]
        record(ctx, "distill.assistant",
               distill_report(model, student, teacher, split, limit=limit, **extra))
    student.eval()
    return student
