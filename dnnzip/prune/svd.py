"""prune.svd: shrink Linear and GRU/LSTM weight matrices by truncated SVD (survey Sec. III-D,
Eq. 7-9; Shah et al. [45]).

The survey lists SVD under layer pruning: each matrix W (N x M) is replaced by the factors of
its best rank-l approximation, keeping the ``keep`` fraction of its parameters. The maths
(factors, ranks, the storage gain S_g of Eq. 8 and the computation gain C_g of Eq. 9) lives in
``dnnzip.factor.svd`` and is shared with ``factor.svd``; this technique is the pruning-family
front end: one keep ratio, and the per-matrix S_g / C_g written to ``ctx.extra["prune.svd"]``.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from dnnzip.config import check_range, coerce_tuple
from dnnzip.errors import ConfigError
from dnnzip.registry import Context, technique


@dataclass(frozen=True)
class SVDPruneConfig:
    """Truncated-SVD factorization to a parameter keep ratio.

    keep: fraction of each matrix's parameters kept by its two factors, in (0, 1).
    rnn: also factor GRU/LSTM gate matrices.
    finetune: fine-tune for ``ctx.epochs`` afterwards.
    ignore: layers (names or "re:" patterns) left dense.
    """

    keep: float = 0.5
    rnn: bool = True
    finetune: bool = True
    ignore: tuple[str, ...] = ()

    def __post_init__(self):
        check_range(self, "keep", 0.0, 1.0, left_open=True, right_open=True)
        for name in ("rnn", "finetune"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"The '{name}' parameter of SVDPruneConfig must be a bool. "
                                  f"Got {getattr(self, name)!r} instead.")
        coerce_tuple(self, "ignore")


@technique("prune.svd", SVDPruneConfig)
def prune_svd(model: nn.Module, config: SVDPruneConfig, ctx: Context) -> nn.Module:
    """Return a copy of ``model`` with its matrices replaced by truncated-SVD factors."""
    from dnnzip.factor.svd import SVDConfig, apply_svd

    out = apply_svd(model, SVDConfig(rule="ratio", ratio=config.keep, rnn=config.rnn,
                                     ignore=config.ignore, finetune=config.finetune), ctx)
    report = getattr(out, "_dnnzip_factor", {})
    ctx.extra["prune.svd"] = {name: {k: r[k] for k in ("rank", "S_g", "C_g") if k in r}
                              for name, r in report.items()}
    return out.eval()
