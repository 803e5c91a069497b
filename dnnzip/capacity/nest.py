"""NestDNN [73] / Neuro.ZERO [54]: one multi-capacity model whose descendants share weights.

NestDNN prunes a teacher into nested descendants, orders filters by importance so that each
smaller capacity is a prefix of every layer's filters, and recovers them by training so that
one set of weights serves all capacities; at run time the capacity is chosen from the resources
left (Neuro.ZERO's runtime adaptation: larger capacity when resources allow). Here:

- ``capacity.nest`` converts Conv/Linear/BN layers into width-sliceable twins
  (``dnnzip.capacity.layers``); capacity i keeps ``ceil(f_i * C)`` filters of each hidden layer
  (the output layer keeps all). Filters are first sorted by L1 norm (NestDNN's importance
  ranking) when the permutation provably preserves the function (checked on an example batch;
  models with residual adds skip it). Recovery trains all capacities jointly: cross-entropy (or,
  with ``teacher_kd``, KD from ``ctx.teacher``) for the full capacity plus KD from its logits for
  each smaller one (in-place distillation, as in slimmable networks; NestDNN's freeze-and-grow
  schedule would need one training run per capacity, which we trade for one joint run).
- ``set_capacity(model, i)`` / ``get_capacity`` / ``num_capacities`` switch in place;
  ``capacity_table`` measures MACs, energy (estimated), latency (measured, torch eager, 1 thread)
  and accuracy per capacity; ``select_capacity(model, budget)`` picks the largest capacity
  that meets a latency / energy / MACs budget.
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

from dnnzip.capacity.layers import NESTED, _Nested, nested_from
from dnnzip.config import check_range, coerce_tuple
from dnnzip.errors import BudgetError, ConfigError, UnsupportedLayerError
from dnnzip.factor._common import kd_hook, matches, recover_with, set_module
from dnnzip.registry import Context, fresh_copy, technique

_CONV = (nn.Conv1d, nn.Conv2d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)
_SLICEABLE = _CONV + (nn.Linear,) + _BN


@dataclass(frozen=True)
class NestConfig:
    """Multi-capacity nesting (NestDNN [73]).

    capacities: ascending fractions of filters kept per hidden layer; the last must be 1.0.
    reorder: sort filters by L1 importance first (only when it keeps the function exact).
    distill: smaller capacities learn the full capacity's soft outputs (else plain CE).
    temperature: KD temperature (survey Eq. 21). 1.0 as in slimmable in-place distillation: the
        T^2-scaled soft terms of the small capacities otherwise swamp the full capacity's loss
        (lenet5 on Fashion-MNIST: full capacity fell from 73 % to 43 % at T=4, kept 73 % at T=1).
    teacher_kd: the full capacity learns from ``ctx.teacher`` (Hinton KD) instead of the labels;
        off by default: the largest capacity on labels is the slimmable "sandwich" rule, and a
        weak teacher only caps it.
    ignore: layer names / ``re:`` patterns kept at full width in every capacity.
    """

    capacities: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    reorder: bool = True
    distill: bool = True
    temperature: float = 1.0
    teacher_kd: bool = False
    ignore: tuple[str, ...] = ()

    def __post_init__(self):
        coerce_tuple(self, "capacities")
        caps = self.capacities
        ok = (len(caps) >= 1 and all(isinstance(c, (int, float)) and not isinstance(c, bool)
                                     and 0 < c <= 1 for c in caps)
              and list(caps) == sorted(set(caps)) and caps[-1] == 1.0)
        if not ok:
            raise ConfigError("The 'capacities' parameter of NestConfig must be strictly "
                              "ascending fractions in (0, 1] ending with 1.0. "
                              f"Got {caps!r} instead.")
        check_range(self, "temperature", 0.0, left_open=True)
        coerce_tuple(self, "ignore")


def _check_supported(model: nn.Module) -> None:
    for name, m in model.named_modules():
        own = list(m.parameters(recurse=False)) + list(m.buffers(recurse=False))
        if own and not isinstance(m, _SLICEABLE + NESTED):
            raise UnsupportedLayerError(
                f"'{name}' ({type(m).__name__}) has no nested-width rule; capacity.nest handles "
                "Conv1d/Conv2d (groups=1 or depthwise), Linear and BatchNorm only.")
        if isinstance(m, _CONV) and m.groups not in (1, m.in_channels):
            raise UnsupportedLayerError(f"'{name}' (Conv, groups={m.groups}) is a group conv; "
                                        "capacity.nest supports groups=1 or depthwise only.")


def _execution_order(model: nn.Module, x: torch.Tensor) -> list[str]:
    order, hooks = [], []
    for name, m in model.named_modules():
        if isinstance(m, _SLICEABLE):
            hooks.append(m.register_forward_hook(lambda mod, i, o, n=name: order.append(n)))
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    return order


def _is_dw(m: nn.Module) -> bool:
    return isinstance(m, _CONV) and m.groups == m.in_channels > 1


def _reorder(model: nn.Module, order: list[str], output: str) -> None:
    """Permute filters by descending L1 norm along a chain of layers, in place."""
    mods = dict(model.named_modules())
    perm = None
    with torch.no_grad():
        for name in order:
            m = mods[name]
            if isinstance(m, _BN) or _is_dw(m):
                if perm is not None:
                    for t in (m.weight, m.bias, getattr(m, "running_mean", None),
                              getattr(m, "running_var", None)):
                        if t is not None:
                            t.copy_(t[perm])
                continue
            if perm is not None:
                width = m.weight.shape[1]
                if width % len(perm):
                    raise ValueError("input width is not a multiple of the channel count")
                s = width // len(perm)
                cols = (perm[:, None] * s + torch.arange(s)).flatten()
                m.weight.copy_(m.weight[:, cols])
            if name == output:
                perm = None
                continue
            perm = m.weight.flatten(1).abs().sum(1).argsort(descending=True)
            m.weight.copy_(m.weight[perm])
            if m.bias is not None:
                m.bias.copy_(m.bias[perm])


def _maybe_reorder(model: nn.Module, order: list[str], output: str, x: torch.Tensor) -> bool:
    trial = copy.deepcopy(model).eval()
    with torch.no_grad():
        ref = model.eval()(x)
        try:
            _reorder(trial, order, output)
            same = torch.allclose(trial(x), ref, rtol=1e-4, atol=1e-5)
        except (ValueError, RuntimeError, IndexError):
            same = False
    if same:
        model.load_state_dict(trial.state_dict())
    return same


def nest(model: nn.Module, capacities: tuple[float, ...], example: torch.Tensor, *,
         reorder: bool = True, ignore: tuple[str, ...] = ()) -> nn.Module:
    """A copy of ``model`` with nested layers (no training); see the module docstring."""
    _check_supported(model)
    model = fresh_copy(model)
    order = _execution_order(model, example)
    convs = [n for n in order if not isinstance(dict(model.named_modules())[n], _BN)]
    if len(convs) < 2:
        raise UnsupportedLayerError(
            f"{type(model).__name__} has {len(convs)} Conv/Linear layer(s) on its forward path; "
            "capacity.nest needs a hidden layer to slice besides the output layer.")
    output = convs[-1]
    reordered = reorder and _maybe_reorder(model, order, output, example)
    n = len(capacities)
    for name, m in list(model.named_modules()):
        if not isinstance(m, _SLICEABLE):
            continue
        full = m.out_features if isinstance(m, nn.Linear) else (
            m.num_features if isinstance(m, _BN) else m.out_channels)
        fixed = name == output or name not in order or matches(name, ignore) or \
            isinstance(m, _BN) or _is_dw(m)
        widths = [full] * n if fixed else [max(1, math.ceil(f * full)) for f in capacities]
        set_module(model, name, nested_from(m, widths))
    model._dnnzip_nest = {"capacities": list(capacities), "reordered": reordered}
    return model


def _layers(model: nn.Module) -> list[_Nested]:
    return [m for m in model.modules() if isinstance(m, _Nested)]


def num_capacities(model: nn.Module) -> int:
    """How many capacities ``model`` holds (0 if it is not a nested model)."""
    layers = _layers(model)
    return len(layers[0].widths) if layers else 0


def get_capacity(model: nn.Module) -> int:
    layers = _layers(model)
    if not layers:
        raise ConfigError(f"{type(model).__name__} is not a multi-capacity model; build one with "
                          "the capacity.nest technique.")
    return int(layers[0].active)


def set_capacity(model: nn.Module, index: int) -> nn.Module:
    """Switch ``model`` (in place: a runtime setting, not a compression step) to capacity
    ``index`` (0 = smallest; negative counts from the largest). Returns ``model``."""
    n = num_capacities(model)
    if n == 0:
        get_capacity(model)  # raises the named error
    if isinstance(index, bool) or not isinstance(index, int) or not -n <= index < n:
        raise ConfigError(f"capacity {index!r} does not exist: {type(model).__name__} holds "
                          f"{n} capacities, 0..{n - 1} (or -1 for the largest).")
    for m in _layers(model):
        m.active.fill_(index % n)
    return model


def filter_fraction(model: nn.Module) -> float:
    """Fraction of the hidden layers' filters active at the current capacity."""
    sliced = [m for m in _layers(model) if m.widths[0] != m.widths[-1]]
    return sum(m.out_width for m in sliced) / max(1, sum(m.widths[-1] for m in sliced))


def sandwich_loss(model: nn.Module, *, teacher: nn.Module | None, temperature: float,
                  distill: bool):
    """Trainer ``loss_fn``: full capacity on labels (or KD from ``teacher``) + every smaller
    capacity on the full capacity's soft outputs (or labels when ``distill`` is false)."""
    head = kd_hook(teacher, temperature) if teacher is not None else None
    n, T = num_capacities(model), temperature

    def loss_fn(m, x, y, logits):  # noqa: ANN001 - trainer hook signature
        loss = head(m, x, y, logits) if head else F.cross_entropy(logits, y)
        soft = F.softmax(logits.detach() / T, dim=-1)
        try:
            for i in range(n - 1):
                set_capacity(m, i)
                out = m(x)
                loss = loss + (F.kl_div(F.log_softmax(out / T, -1), soft,
                                        reduction="batchmean") * T * T
                               if distill else F.cross_entropy(out, y))
        finally:
            set_capacity(m, n - 1)
        return loss
    return loss_fn


@technique("capacity.nest", NestConfig)
def apply_nest(model: nn.Module, config: NestConfig, ctx: Context) -> nn.Module:
    """One file, many capacities: nested copy of ``model``, recovered on ``ctx.data``."""
    try:
        x = ctx.example()
    except ConfigError as exc:
        raise ConfigError("capacity.nest needs an example input (ctx.example_input or ctx.data) "
                          "to find the layer order and the output layer.") from exc
    nested = nest(model, config.capacities, x, reorder=config.reorder, ignore=config.ignore)
    set_capacity(nested, -1)
    teacher = copy.deepcopy(ctx.teacher).eval() \
        if ctx.teacher is not None and config.teacher_kd else None
    recover_with(nested, ctx, sandwich_loss(nested, teacher=teacher,
                                            temperature=config.temperature,
                                            distill=config.distill))
    set_capacity(nested, -1)
    return nested.train(model.training)


def _measure(model: nn.Module, example: torch.Tensor, repeats: int) -> dict[str, Any]:
    from dnnzip.profile.counts import count_macs, total_macs
    from dnnzip.profile.energy import estimate_energy
    from dnnzip.runtime import get_runtime

    rows = count_macs(model, example[:1])
    mods = dict(model.named_modules())
    rows = [dataclasses.replace(r, params=mods[r.name].used_params,
                                params_nonzero=mods[r.name].used_params)
            if isinstance(mods.get(r.name), _Nested) else r for r in rows]
    rt = get_runtime("torch")
    session = rt.prepare(model, example[:1], threads=1)
    lat = rt.time(session, example[:1], warmup=max(3, repeats // 5), repeats=repeats)
    return {"macs": total_macs(rows), "energy_mj": estimate_energy(rows).total_mj,
            "latency_ms": lat.p50_ms}


def capacity_table(model: nn.Module, *, example: torch.Tensor, data: Any = None,
                   repeats: int = 50) -> list[dict[str, Any]]:
    """Per capacity: filter fraction, MACs, estimated energy (mJ), p50 latency (ms; torch eager,
    1 thread, batch 1) and, with ``data``, test accuracy. The active capacity is restored."""
    from dnnzip.train import evaluate

    keep = get_capacity(model)
    was = model.training
    model.eval()
    rows = []
    try:
        for i in range(num_capacities(model)):
            set_capacity(model, i)
            row = {"capacity": i, "filters": round(filter_fraction(model), 4),
                   **_measure(model, example, repeats)}
            if data is not None:
                row["accuracy"] = evaluate(model, data)
            rows.append(row)
    finally:
        set_capacity(model, keep)
        model.train(was)
    return rows


def select_capacity(model: nn.Module, budget: Any = None, *, max_latency_ms: float | None = None,
                    max_energy_mj: float | None = None, max_macs: int | None = None,
                    table: list[dict] | None = None, example: torch.Tensor | None = None) -> int:
    """Set and return the largest capacity meeting the budget (a ``dnnzip.budget.Budget`` or
    the keyword limits). ``table`` (from ``capacity_table``) avoids re-measuring; otherwise
    ``example`` is needed. No capacity fits -> BudgetError with the smallest one's costs."""
    if budget is not None:
        max_latency_ms = max_latency_ms or getattr(budget, "max_latency_ms", None)
        max_energy_mj = max_energy_mj or getattr(budget, "max_energy_mj", None)
    limits = {"latency_ms": max_latency_ms, "energy_mj": max_energy_mj, "macs": max_macs}
    limits = {k: v for k, v in limits.items() if v is not None}
    if not limits:
        raise ConfigError("select_capacity needs a limit: max_latency_ms, max_energy_mj or "
                          "max_macs (or a Budget with one of them).")
    if table is None:
        if example is None:
            raise ConfigError("select_capacity needs table= (from capacity_table) or example=.")
        table = capacity_table(model, example=example)
    fits = [r["capacity"] for r in table if all(r[k] <= v for k, v in limits.items())]
    if not fits:
        smallest = min(table, key=lambda r: r["capacity"])
        raise BudgetError(f"no capacity of {type(model).__name__} meets {limits}; the smallest "
                          f"costs {({k: smallest[k] for k in limits})}.", closest=smallest)
    set_capacity(model, max(fits))
    return max(fits)
