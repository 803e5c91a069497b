"""prune.heads: remove whole attention heads and feed-forward neurons of transformer encoders.

Torch-Pruning's dependency graph has no rule for multi-head attention (a head is a block of
``head_dim`` rows of the Q, K and V projections *and* the same block of columns of the output
projection, coupled through the reshape to ``(N, heads, L, head_dim)``), nor for the
feed-forward block as one unit. This module is that rule (survey Sec. III-B, structured
pruning, applied to transformers as in Michel et al. 2019, "Are Sixteen Heads Really Better
than One?", NeurIPS):

- removing head h deletes rows ``h*d .. h*d+d-1`` of ``query``/``key``/``value`` (weights and
  biases) and the same columns of ``output``; the layer then has ``heads - 1`` heads of the same
  ``head_dim`` (scaled dot-product attention keeps its 1/sqrt(head_dim) scale);
- removing FFN neuron j deletes row j of ``intermediate`` (and its bias) and column j of
  ``output``; the residual width (hidden) is untouched, so nothing else changes.

The result is dense and physically smaller (``nn.Linear`` of the new sizes). A layer never
loses every head (or every neuron): that is a ``ConfigError`` naming the layer.

Criteria (per head and per neuron):

- ``l1`` (data-free): the L1 norm of the weights a unit writes into the residual stream, i.e.
  the head's ``head_dim`` columns of the output projection, the neuron's column of the FFN
  output matrix (the filter-norm criterion of Li et al. 2017, survey Sec. III-B, moved to the
  output side because a head's Q/K rows alone do not say how much it contributes).
- ``taylor`` (default): Michel et al.'s head importance (their Eq. 2) I_h = E_x |dL(x)/d xi_h|, with a
  mask variable xi_h = 1 on every head's context vector (and xi_j on every FFN activation,
  which is Molchanov et al.'s first-order Taylor criterion for neurons). With a classification
  head and labelled data L is the cross-entropy, as in the paper. Deviation: a sentence
  embedding model has no task loss at compression time, so there L(x) = r_x . e(x) with a fixed
  random Gaussian direction r_x per sample: E|r . g| = sqrt(2/pi) ||g||, so the score is (up to
  a constant) the expected norm of the first-order change of the embedding when the unit is
  masked. On all-MiniLM-L6-v2 at 50 % heads + 50 % neurons it keeps cos 0.66 to the unpruned
  embeddings where l1 keeps 0.44 and random units 0.50 (benchmarks/results/transformer.md),
  hence the default, although it needs inputs (``ctx.data`` or ``ctx.example_input``).

Scope ``layer`` removes ``head_ratio`` of each layer's heads and ``ffn_ratio`` of its neurons;
``global`` ranks units across layers after normalising each layer's scores by their L2 norm
(Michel et al., Sec. 4.2) and keeps at least ``min_heads`` heads and one neuron per layer.

Optional fine-tuning (``finetune=True``, ``ctx.epochs`` epochs on ``ctx.data``): cross-entropy
for a classifier, else distillation of the unpruned model's embeddings (loss 1 - cos).

Other layer classes join with ``register_head_rule(cls, rule)``. ``nn.MultiheadAttention``
cannot be shrunk (it requires heads * head_dim == embed_dim), so it raises
``UnsupportedLayerError``.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dnnzip.config import check_range, coerce_enum, coerce_tuple
from dnnzip.errors import ConfigError, UnsupportedLayerError
from dnnzip.prune._util import calib_batches, finetune as finetune_ce, matches
from dnnzip.registry import Context, fresh_copy, technique
from dnnzip.zoo.minilm import FeedForward, SelfAttention


class HeadCriterion(enum.Enum):
    L1 = "l1"
    TAYLOR = "taylor"


class HeadScope(enum.Enum):
    LAYER = "layer"
    GLOBAL = "global"


@dataclass(frozen=True)
class HeadPruneConfig:
    """Remove attention heads and FFN neurons ranked by ``criterion``.

    head_ratio: fraction of each layer's heads removed (scope=layer) or of all heads
        (scope=global), in [0, 1).
    ffn_ratio: the same for feed-forward neurons, in [0, 1).
    criterion: "taylor" (default; Michel et al.'s head-mask gradient, needs ``ctx.data`` or
        ``ctx.example_input``) or "l1" (output-projection weight norm, data-free; on
        all-MiniLM-L6-v2 it ranks no better than random, benchmarks/results/transformer.md).
    scope: "layer" or "global".
    min_heads: heads every layer keeps at least (global scope).
    calib_batches: batches used by the taylor criterion.
    finetune: fine-tune (classifier) or distil (embedding model) for ``ctx.epochs`` afterwards.
    ignore: layers (names or "re:" patterns) left as they are.
    """

    head_ratio: float = 0.5
    ffn_ratio: float = 0.5
    criterion: HeadCriterion = HeadCriterion.TAYLOR
    scope: HeadScope = HeadScope.LAYER
    min_heads: int = 1
    calib_batches: int = 4
    finetune: bool = False
    ignore: tuple[str, ...] = ()

    def __post_init__(self):
        check_range(self, "head_ratio", 0.0, 1.0, right_open=True)
        check_range(self, "ffn_ratio", 0.0, 1.0, right_open=True)
        coerce_enum(self, "criterion", HeadCriterion)
        coerce_enum(self, "scope", HeadScope)
        check_range(self, "min_heads", 1, 4096, integer=True)
        check_range(self, "calib_batches", 1, 10_000, integer=True)
        if not isinstance(self.finetune, bool):
            raise ConfigError("The 'finetune' parameter of HeadPruneConfig must be a bool. "
                              f"Got {self.finetune!r} instead.")
        coerce_tuple(self, "ignore")


# ---------------------------------------------------------------- rules
def _linear(m: nn.Module, where: str) -> nn.Linear:
    if type(m) is not nn.Linear:
        raise UnsupportedLayerError(
            f"'{where}' is a {type(m).__name__}, not an nn.Linear; prune.heads slices plain "
            "linear layers: run it before quantization, factorization or connection pruning.")
    return m


def _new_linear(old: nn.Linear, weight: Tensor, bias: Tensor | None) -> nn.Linear:
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                    device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    new.weight.requires_grad_(old.weight.requires_grad)
    if bias is not None:
        new.bias.requires_grad_(old.bias.requires_grad)
    return new


def keep_rows(layer: nn.Linear, keep: Tensor) -> nn.Linear:
    """A copy of ``layer`` with only output features ``keep``."""
    w = layer.weight.detach().index_select(0, keep.to(layer.weight.device))
    b = None if layer.bias is None else layer.bias.detach().index_select(0, keep.to(layer.bias.device))
    return _new_linear(layer, w, b)


def keep_cols(layer: nn.Linear, keep: Tensor) -> nn.Linear:
    """A copy of ``layer`` with only input features ``keep``."""
    w = layer.weight.detach().index_select(1, keep.to(layer.weight.device))
    return _new_linear(layer, w, None if layer.bias is None else layer.bias.detach())


def _keep(n: int, drop: Sequence[int], where: str, unit: str) -> Tensor:
    drop_set = {int(i) for i in drop}
    if any(i < 0 or i >= n for i in drop_set):
        raise ConfigError(f"'{where}' has {n} {unit}s; cannot remove {sorted(drop_set)}")
    if len(drop_set) >= n:
        raise ConfigError(
            f"pruning would remove every {unit} ({n}) of '{where}'; a layer must keep at least "
            f"one: lower the ratio or add '{where}' to ignore=.")
    return torch.tensor([i for i in range(n) if i not in drop_set], dtype=torch.long)


class HeadRule:
    """Heads of ``dnnzip.zoo.minilm.SelfAttention`` (query/key/value rows, output columns)."""

    kind = "head"

    def units(self, m: nn.Module) -> int:
        return m.heads

    def l1(self, m: nn.Module, where: str) -> Tensor:
        w = _linear(m.output, f"{where}.output").weight.detach()
        return w.abs().view(w.shape[0], m.heads, m.head_dim).sum(dim=(0, 2))

    def set_gate(self, m: nn.Module, gate: Tensor | None) -> None:
        m.head_gate = gate

    def prune(self, m: nn.Module, drop: Sequence[int], where: str) -> None:
        keep_h = _keep(m.heads, drop, where, "head")
        d = m.head_dim
        rows = (keep_h[:, None] * d + torch.arange(d)[None, :]).reshape(-1)
        for name in ("query", "key", "value"):
            setattr(m, name, keep_rows(_linear(getattr(m, name), f"{where}.{name}"), rows))
        m.output = keep_cols(_linear(m.output, f"{where}.output"), rows)
        m.num_heads = len(keep_h)


class NeuronRule:
    """Neurons of ``dnnzip.zoo.minilm.FeedForward`` (intermediate rows, output columns)."""

    kind = "neuron"

    def units(self, m: nn.Module) -> int:
        return m.size

    def l1(self, m: nn.Module, where: str) -> Tensor:
        return _linear(m.output, f"{where}.output").weight.detach().abs().sum(0)

    def set_gate(self, m: nn.Module, gate: Tensor | None) -> None:
        m.neuron_gate = gate

    def prune(self, m: nn.Module, drop: Sequence[int], where: str) -> None:
        keep = _keep(self.units(m), drop, where, "neuron")
        m.intermediate = keep_rows(_linear(m.intermediate, f"{where}.intermediate"), keep)
        m.output = keep_cols(_linear(m.output, f"{where}.output"), keep)
        m.ffn_size = len(keep)


_RULES: dict[type, Any] = {SelfAttention: HeadRule(), FeedForward: NeuronRule()}


def register_head_rule(cls: type, rule: Any) -> None:
    """Teach prune.heads a module class. ``rule`` has ``kind`` ("head" or "neuron"),
    ``units(m)``, ``l1(m, where) -> Tensor``, ``set_gate(m, gate_or_None)`` (a multiplier of
    shape (N, units) on the unit outputs, for the taylor criterion) and ``prune(m, drop, where)``."""
    _RULES[cls] = rule


@dataclass
class Unit:
    name: str
    module: nn.Module
    rule: Any


def find_units(model: nn.Module, ignore: Sequence[str] = ()) -> list[Unit]:
    """The attention and FFN modules prune.heads can shrink; raises if there are none."""
    units = []
    for name, m in model.named_modules():
        if not name or matches(name, ignore):
            continue
        if isinstance(m, nn.MultiheadAttention):
            raise UnsupportedLayerError(
                f"'{name}' (nn.MultiheadAttention) has no head-pruning rule: it requires heads * "
                "head_dim == embed_dim, so heads cannot be removed physically. Build the model "
                f"from dnnzip.zoo.minilm.SelfAttention, add '{name}' to ignore=, or register a "
                "rule with dnnzip.prune.attention.register_head_rule(cls, rule).")
        rule = _RULES.get(type(m))
        if rule is not None:
            units.append(Unit(name, m, rule))
    if not any(u.rule.kind == "head" for u in units) and not any(
            u.rule.kind == "neuron" for u in units):
        raise UnsupportedLayerError(
            f"prune.heads found no attention heads or feed-forward blocks in "
            f"{type(model).__name__} (it shrinks dnnzip.zoo.minilm.SelfAttention/FeedForward, "
            "e.g. zoo model 'minilm'); use prune.channel for CNNs and RNNs, or register a rule "
            "with dnnzip.prune.attention.register_head_rule(cls, rule).")
    return units


# ---------------------------------------------------------------- scores
def _ids(x: Any) -> Tensor:
    """Token ids of a batch: a tensor, or a list of texts (tokenised with MiniLM's tokenizer)."""
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], str):
        from dnnzip.zoo.minilm import tokenize
        return tokenize(list(x))
    return x


def _classifies(model: nn.Module) -> bool:
    return bool(getattr(model, "classify", False))


def taylor_scores(model: nn.Module, units: list[Unit], batches: list, seed: int = 0
                  ) -> dict[str, Tensor]:
    """Michel et al.'s I = E_x |dL(x)/d xi| per unit (see the module docstring for L)."""
    sums = {u.name: torch.zeros(u.rule.units(u.module)) for u in units}
    count = 0
    gen = torch.Generator().manual_seed(seed)
    was = model.training
    model.eval()
    try:
        for x, y in batches:
            x = _ids(x)
            n = x.shape[0]
            device = next(model.parameters()).device
            gates = {u.name: torch.ones(n, u.rule.units(u.module), device=device,
                                        requires_grad=True) for u in units}
            for u in units:
                u.rule.set_gate(u.module, gates[u.name])
            with torch.enable_grad():
                out = model(x)
                if _classifies(model) and y is not None and bool((y >= 0).all()):
                    loss = F.cross_entropy(out, y.to(out.device), reduction="sum")
                else:
                    r = torch.randn(out.shape, generator=gen).to(out.device)
                    loss = (out * r).sum()
                grads = torch.autograd.grad(loss, [gates[u.name] for u in units])
            for u, g in zip(units, grads):
                sums[u.name] += g.detach().abs().sum(0).cpu()
            count += n
    finally:
        for u in units:
            u.rule.set_gate(u.module, None)
        model.train(was)
    return {k: v / max(count, 1) for k, v in sums.items()}


def score_units(model: nn.Module, units: list[Unit], config: HeadPruneConfig, ctx: Context
                ) -> dict[str, Tensor]:
    if config.criterion is HeadCriterion.TAYLOR:
        return taylor_scores(model, units, calib_batches(ctx, config.calib_batches), ctx.seed)
    return {u.name: u.rule.l1(u.module, u.name) for u in units}


def _lowest(s: Tensor, k: int) -> list[int]:
    return sorted(int(i) for i in torch.argsort(s, stable=True)[:k])


def select(units: list[Unit], scores: dict[str, Tensor], config: HeadPruneConfig
           ) -> dict[str, list[int]]:
    """Units to remove per module: name -> sorted indices."""
    out: dict[str, list[int]] = {}
    for kind, ratio in (("head", config.head_ratio), ("neuron", config.ffn_ratio)):
        group = [u for u in units if u.rule.kind == kind]
        if config.scope is HeadScope.LAYER:
            for u in group:
                n = u.rule.units(u.module)
                out[u.name] = _lowest(scores[u.name], math.floor(ratio * n + 1e-9))
            continue
        floor = config.min_heads if kind == "head" else 1
        pool = []
        for u in group:
            s = scores[u.name]
            norm = s / (s.norm() + 1e-12)  # Michel et al.: per-layer L2 normalisation
            pool += [(float(norm[i]), u.name, i) for i in range(s.numel())]
        pool.sort()
        budget = math.floor(ratio * len(pool) + 1e-9)
        left = {u.name: u.rule.units(u.module) for u in group}
        chosen: dict[str, list[int]] = {u.name: [] for u in group}
        for _, name, i in pool:
            if budget <= 0:
                break
            if left[name] > floor:
                chosen[name].append(i)
                left[name] -= 1
                budget -= 1
        out.update({k: sorted(v) for k, v in chosen.items()})
    return out


def prune_units(units: list[Unit], chosen: dict[str, list[int]]) -> dict[str, tuple[int, int]]:
    """Shrink every module in place (after checking all of them); {name: (before, after)}."""
    for u in units:  # check everything before touching anything
        _keep(u.rule.units(u.module), chosen.get(u.name, []), u.name, u.rule.kind)
    sizes = {}
    for u in units:
        before = u.rule.units(u.module)
        if chosen.get(u.name):
            u.rule.prune(u.module, chosen[u.name], u.name)
        sizes[u.name] = (before, u.rule.units(u.module))
    return sizes


def distill_loss(teacher: nn.Module) -> Callable:
    """``loss_fn`` hook: 1 - cos(student embedding, teacher embedding), batch mean."""
    teacher = teacher.eval()

    def loss(model, x, y, logits):
        with torch.no_grad():
            t = teacher(x)
        return (1.0 - F.cosine_similarity(logits, t, dim=-1)).mean()
    return loss


@technique("prune.heads", HeadPruneConfig)
def prune_heads(model: nn.Module, config: HeadPruneConfig, ctx: Context) -> nn.Module:
    """Remove attention heads and FFN neurons (Michel et al. 2019); dense, smaller result."""
    find_units(model, config.ignore)  # raise before copying a model it cannot touch
    teacher = model
    model = fresh_copy(model)
    units = find_units(model, config.ignore)
    scores = score_units(model, units, config, ctx)
    chosen = select(units, scores, config)
    sizes = prune_units(units, chosen)
    model._dnnzip_prune_heads = {k: list(v) for k, v in sizes.items()}
    if config.finetune and ctx.data is not None and ctx.epochs > 0:
        if _classifies(model):
            finetune_ce(model, ctx)
        else:
            from dnnzip.train import finetune as fit_ctx
            ref = ctx.teacher if ctx.teacher is not None else teacher
            fit_ctx(model, ctx, loss_fn=distill_loss(fresh_copy(ref)))
    return model.eval()
