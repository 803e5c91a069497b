"""Truncated SVD of fully connected layers and GRU/LSTM gate matrices (survey Sec. III-D,
Eq. 7-9; Shah et al. [45] compress LSTMs for phones/watches/RPi this way).

Eq. 7 writes W (N x M) = A (N x l) E (l x l) B (l x M). We fold the diagonal E into both factors
(A sqrt(E), sqrt(E) B) so a layer is two plain matrix products; a factored ``Linear(in, out)``
becomes ``Sequential(Linear(in, r, bias=False), Linear(r, out))``, standard modules that reload
through ``dnnzip.nn.spec``. GRU/LSTM become ``factor.LowRankGRU`` / ``factor.LowRankLSTM``.

Plain functions (stable API, also used by ``dnnzip.prune.svd``):

- ``svd_factors(W, rank) -> (A, B)`` with ``A @ B`` the best rank-``rank`` approximation.
- ``rank_for_energy(s, energy)`` smallest rank keeping ``energy`` of sum(sigma^2).
- ``rank_for_ratio(m, n, ratio)`` largest rank whose factors hold <= ``ratio`` of m*n params.
- ``rank_for_bytes(m, n, max_bytes)`` largest rank whose fp32 factors fit ``max_bytes``.
- ``gains(m, n, k)`` storage and computation gains S_g, C_g (Eq. 8-9) and the folded ones.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import torch
from torch import nn

from dnnzip.config import check_range, coerce_enum, coerce_tuple
from dnnzip.errors import BudgetError, ConfigError
from dnnzip.factor._common import recover, set_module, targets
from dnnzip.factor.lowrank_rnn import LowRankRNN, from_rnn
from dnnzip.registry import Context, fresh_copy, technique

__all__ = ["svd_factors", "rank_for_energy", "rank_for_ratio", "rank_for_bytes", "gains",
           "factor_linear", "SVDConfig", "RankRule", "apply_svd"]


def _check_rank(shape: tuple[int, int], rank: int, where: str) -> None:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1 or rank > min(shape):
        raise ConfigError(
            f"rank for {where} must be an int in [1, {min(shape)}] (min of its shape "
            f"{tuple(shape)}). Got {rank!r} instead; pick a smaller rank or use energy=/ratio=."
        )


def svd_factors(W: torch.Tensor, rank: int, *, where: str = "weight"
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Best rank-``rank`` factors of a 2-D ``W`` (Eckart-Young): ``A (m x r) @ B (r x n)``.

    A = U_r sqrt(S_r), B = sqrt(S_r) V_r^T (Eq. 7 with E split evenly, which balances the
    factors' scales for later quantization). A rank outside [1, min(m, n)] is a ConfigError.
    """
    if W.dim() != 2:
        raise ConfigError(f"svd_factors needs a 2-D matrix for {where}, got shape {tuple(W.shape)}")
    _check_rank(tuple(W.shape), rank, where)
    U, S, Vh = torch.linalg.svd(W.detach().double(), full_matrices=False)
    root = S[:rank].sqrt()
    A = (U[:, :rank] * root).to(W.dtype)
    B = (root[:, None] * Vh[:rank]).to(W.dtype)
    return A.contiguous(), B.contiguous()


def singular_values(W: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(W.detach().double())


def rank_for_energy(s: torch.Tensor, energy: float) -> int:
    """Smallest k with sum_{i<k} s_i^2 >= energy * sum s_i^2 (``s`` sorted descending)."""
    if not 0.0 < energy <= 1.0:
        raise ConfigError(f"energy must be a float in (0, 1]. Got {energy!r} instead.")
    e = torch.as_tensor(s, dtype=torch.float64) ** 2
    total = float(e.sum())
    if total == 0.0:
        return 1
    cum = torch.cumsum(e, 0) / total
    k = int(torch.searchsorted(cum, torch.tensor(energy - 1e-12, dtype=torch.float64))) + 1
    return min(k, len(e))


def rank_for_ratio(m: int, n: int, ratio: float) -> int:
    """Largest k >= 1 with k (m + n) <= ratio * m * n (factored params vs dense params)."""
    if not 0.0 < ratio <= 1.0:
        raise ConfigError(f"ratio must be a float in (0, 1]. Got {ratio!r} instead.")
    return max(1, min(min(m, n), int(ratio * m * n // (m + n))))


def rank_for_bytes(m: int, n: int, max_bytes: int, *, bytes_per_value: int = 4) -> int:
    """Largest k with k (m + n) * bytes_per_value <= max_bytes; 0 if even rank 1 does not fit."""
    return max(0, min(min(m, n), int(max_bytes // (bytes_per_value * (m + n)))))


def gains(m: int, n: int, k: int) -> dict[str, float]:
    """Storage and computation gains of a rank-k factorization of an m x n matrix.

    ``S_g`` and ``C_g`` are survey Eq. 8 and Eq. 9 verbatim (they count the l x l E matrix and,
    in Eq. 9, products against an N x N operand). ``S_g_folded`` / ``C_g_folded`` are what
    dnnzip's layers realise with E folded in: m n / (k (m + n)) for both parameters and MACs of a
    matrix-vector product.
    """
    _check_rank((m, n), k, "gains")
    return {
        "S_g": m * n / (m * k + k * k + k * n),
        "C_g": m * m * n / (m * m * k + k ** 3 + k * k * n),
        "S_g_folded": m * n / (k * (m + n)),
        "C_g_folded": m * n / (k * (m + n)),
    }


def factor_linear(layer: nn.Linear, rank: int, *, where: str = "linear") -> nn.Sequential:
    """``Linear(in, out)`` -> ``Sequential(Linear(in, r, bias=False), Linear(r, out))``."""
    A, B = svd_factors(layer.weight, rank, where=where)
    first = nn.Linear(layer.in_features, rank, bias=False)
    second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
    with torch.no_grad():
        first.weight.copy_(B)
        second.weight.copy_(A)
        if layer.bias is not None:
            second.bias.copy_(layer.bias)
    return nn.Sequential(first, second)


class RankRule(str, enum.Enum):
    ENERGY = "energy"  # keep ``energy`` of the squared singular values per matrix
    RATIO = "ratio"    # factored params <= ``ratio`` x dense params per matrix
    BYTES = "bytes"    # all targeted matrices together fit ``max_bytes`` (fp32)
    FIXED = "fixed"    # the same ``rank`` for every matrix larger than it; matrices with
    #                    min(shape) <= rank stay dense; a rank no matrix can take is an error


@dataclass(frozen=True)
class SVDConfig:
    """Truncated-SVD factorization (survey Eq. 7-9, [45]).

    rule: how each matrix's rank is chosen (see RankRule).
    energy / ratio / max_bytes / rank: the parameter of that rule.
    rnn: also factor GRU/LSTM gate matrices (weight_ih, weight_hh of every layer/direction).
    min_gain: a matrix is factored only if its folded storage gain exceeds this (1.0 = any saving).
    ignore: module names or ``re:`` patterns left dense.
    finetune: recover accuracy with ``ctx.epochs`` of training on ``ctx.data`` (KD from the
        original model when ``distill`` is true).
    """

    rule: RankRule = RankRule.ENERGY
    energy: float = 0.9
    ratio: float = 0.5
    max_bytes: int = 0
    rank: int = 8
    rnn: bool = True
    min_gain: float = 1.0
    ignore: tuple[str, ...] = ()
    finetune: bool = False
    distill: bool = False

    def __post_init__(self):
        coerce_enum(self, "rule", RankRule)
        check_range(self, "energy", 0.0, 1.0, left_open=True)
        check_range(self, "ratio", 0.0, 1.0, left_open=True)
        check_range(self, "max_bytes", 0, integer=True)
        check_range(self, "rank", 1, integer=True)
        check_range(self, "min_gain", 0.0)
        coerce_tuple(self, "ignore")
        if self.rule is RankRule.BYTES and self.max_bytes <= 0:
            raise ConfigError("The 'max_bytes' parameter of SVDConfig must be an int > 0 when "
                              "rule='bytes'. Got 0 instead.")


def _matrices(model: nn.Module, config: SVDConfig) -> list[tuple[str, str, torch.Tensor]]:
    """(module name, weight name, matrix) for every targeted matrix."""
    kinds = (nn.Linear,) + ((nn.GRU, nn.LSTM) if config.rnn else ())
    out = []
    for name, mod in targets(model, kinds, config.ignore):
        if isinstance(mod, nn.Linear):
            out.append((name, "weight", mod.weight))
        else:
            for wname in mod._flat_weights_names:
                if wname.startswith(("weight_ih", "weight_hh")):
                    out.append((name, wname, getattr(mod, wname)))
    return out


def _ranks_by_rule(mats, config: SVDConfig, energy: float | None = None) -> list[int]:
    ranks = []
    for name, wname, W in mats:
        m, n = W.shape
        if config.rule is RankRule.FIXED:
            ranks.append(config.rank if config.rank < min(m, n) else 0)  # no saving: dense
        elif config.rule is RankRule.RATIO:
            ranks.append(rank_for_ratio(m, n, config.ratio))
        else:
            ranks.append(rank_for_energy(singular_values(W), energy or config.energy))
    return ranks


def choose_ranks(model: nn.Module, config: SVDConfig) -> dict[tuple[str, str], int]:
    """Rank per targeted (module, weight); 0 means "leave dense" (no saving / below min_gain)."""
    mats = _matrices(model, config)
    if config.rule is RankRule.BYTES:
        ranks = _ranks_for_budget(mats, config)
    else:
        ranks = _ranks_by_rule(mats, config)
    if config.rule is RankRule.FIXED and mats and not any(ranks):
        largest = max(mats, key=lambda t: min(t[2].shape))
        _check_rank(tuple(largest[2].shape), config.rank, f"'{largest[0]}.{largest[1]}'")
    out = {}
    for (name, wname, W), k in zip(mats, ranks):
        m, n = W.shape
        keep = k > 0 and gains(m, n, k)["S_g_folded"] > max(config.min_gain, 1.0 - 1e-9)
        out[(name, wname)] = k if keep else 0
    return out


def _bytes(mats, ranks) -> int:
    total = 0
    for (_, _, W), k in zip(mats, ranks):
        m, n = W.shape
        total += 4 * (k * (m + n) if 0 < k and k * (m + n) < m * n else m * n)
    return total


def _ranks_for_budget(mats, config: SVDConfig) -> list[int]:
    """One energy level for all matrices, the highest whose fp32 bytes fit ``max_bytes``
    (bisection; bytes grow monotonically with energy)."""
    ones = [1] * len(mats)
    if not mats or _bytes(mats, ones) > config.max_bytes:
        raise BudgetError(
            f"max_bytes={config.max_bytes} cannot hold the targeted matrices even at rank 1 "
            f"({_bytes(mats, ones)} bytes); raise max_bytes or add layers to ignore=.",
            closest={"bytes": _bytes(mats, ones)})
    svals = [singular_values(W) for _, _, W in mats]
    lo, hi = 0.0, 1.0
    best = ones
    for _ in range(30):
        mid = (lo + hi) / 2
        ranks = [rank_for_energy(s, max(mid, 1e-9)) for s in svals]
        if _bytes(mats, ranks) <= config.max_bytes:
            lo, best = mid, ranks
        else:
            hi = mid
    return best


@technique("factor.svd", SVDConfig)
def apply_svd(model: nn.Module, config: SVDConfig, ctx: Context) -> nn.Module:
    """Replace Linear / GRU / LSTM weights by truncated-SVD factors; input left untouched.

    The chosen ranks and per-matrix gains are recorded in ``model._dnnzip_factor`` (a plain
    dict, for reports).
    """
    original = model
    model = fresh_copy(model)
    ranks = choose_ranks(model, config)
    report = {}
    for name, mod in list(model.named_modules()):
        if isinstance(mod, nn.Linear) and ranks.get((name, "weight")):
            k = ranks[(name, "weight")]
            set_module(model, name, factor_linear(mod, k, where=f"'{name}'"))
            report[name] = {"rank": k, **gains(mod.out_features, mod.in_features, k)}
        elif isinstance(mod, (nn.GRU, nn.LSTM)):
            rk = {w: k for (n, w), k in ranks.items() if n == name and k}
            if rk:
                set_module(model, name, from_rnn(mod, rk))
                for w, k in rk.items():
                    m, n = getattr(mod, w).shape
                    report[f"{name}.{w}"] = {"rank": k, **gains(m, n, k)}
    if config.finetune:
        recover(model, ctx, teacher=(ctx.teacher or original) if config.distill else None)
    model._dnnzip_factor = report
    return model.eval() if not original.training else model


_ = LowRankRNN  # re-exported for ``from dnnzip.factor.svd import LowRankRNN``
