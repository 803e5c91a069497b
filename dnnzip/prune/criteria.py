"""Channel importance criteria: one score per channel of a group (higher = keep).

- l1 / l2: norm of the filters that produce the channel (Li et al. 2017), summed over the
  coupled producers of a group (e.g. both convs feeding a residual add).
- bn_scale: |gamma| of the BatchNorm after the channel (network slimming, Liu et al. 2017; with
  L1 on gamma during training, survey Eq. 2). Groups without a BatchNorm fall back to l1.
- taylor: first-order Taylor estimate of the loss change when the channel is removed,
  |sum_w w * dL/dw| over the group's producing parameters (Molchanov et al. 2017/2019).
- thinet: ThiNet (Luo et al. 2017, survey Eq. 3-5) - greedily remove the channel whose
  contribution to the *next* layer's sampled outputs changes them least.
- reconstruction: He et al. 2017 (survey Eq. 1) - LASSO on the per-channel contributions to the
  next layer's sampled outputs; channels entering the LASSO path last are removed first. The
  least-squares refit of the next layer is in ``dnnzip.prune.reconstruct``.
"""
from __future__ import annotations

import enum
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from dnnzip.errors import ConfigError
from dnnzip.prune.graph import Group
from dnnzip.prune.rnn import RNN_TYPES, hidden_magnitude

_PRODUCERS = (nn.Conv1d, nn.Conv2d, nn.Linear)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


class Criterion(enum.Enum):
    L1 = "l1"
    L2 = "l2"
    BN_SCALE = "bn_scale"
    TAYLOR = "taylor"
    THINET = "thinet"
    RECONSTRUCTION = "reconstruction"


def _scatter(score: torch.Tensor, values: torch.Tensor, root_idxs) -> None:
    score.index_add_(0, torch.as_tensor(root_idxs, dtype=torch.long), values.to(score.dtype))


def magnitude(group: Group, p: int) -> torch.Tensor:
    score = torch.zeros(group.size, dtype=torch.float64)
    for m, is_out, idxs, roots in group.deps():
        if not is_out:
            continue
        if isinstance(m, RNN_TYPES):
            _scatter(score, hidden_magnitude(m, p).pow(p)[idxs], roots)
        elif isinstance(m, _PRODUCERS):
            rows = m.weight.detach().flatten(1)[idxs].abs().pow(p).sum(1)
            _scatter(score, rows, roots)
    return score.pow(1.0 / p)


def bn_scale(group: Group) -> torch.Tensor | None:
    score = torch.zeros(group.size, dtype=torch.float64)
    found = False
    for m, is_out, idxs, roots in group.deps():
        if isinstance(m, _BN) and m.affine:
            _scatter(score, m.weight.detach().abs()[idxs], roots)
            found = True
    return score if found else None


def taylor(group: Group) -> torch.Tensor:
    """Needs ``.grad`` filled on the producing parameters (see ``accumulate_grads``)."""
    score = torch.zeros(group.size, dtype=torch.float64)
    for m, is_out, idxs, roots in group.deps():
        if not is_out:
            continue
        for name, p in m.named_parameters(recurse=False):
            if p.grad is None:
                continue
            wg = (p.detach() * p.grad)
            if isinstance(m, RNN_TYPES):
                if not name.startswith(("weight", "bias")):
                    continue
                g = 4 if isinstance(m, nn.LSTM) else 3
                per = wg.view(g, m.hidden_size, -1).sum(dim=(0, 2))
            elif wg.dim() == 0:
                continue
            else:
                per = wg.flatten(1).sum(1) if wg.dim() > 1 else wg
            _scatter(score, per[idxs], roots)
    return score.abs()


def accumulate_grads(model: nn.Module, batches) -> None:
    """Fill ``.grad`` with the summed cross-entropy gradient over ``batches``."""
    model.zero_grad()
    was = model.training
    model.eval()
    with torch.enable_grad():
        for x, y in batches:
            if y is None:
                raise ConfigError("criterion 'taylor' needs labelled data: pass ctx.data")
            F.cross_entropy(model(x), y).backward()
    model.train(was)


def thinet_scores(contrib: torch.Tensor) -> torch.Tensor:
    """Greedy ThiNet (Eq. 3-5) on contributions ``contrib`` (channels x samples).

    Repeatedly remove the channel that keeps ||sum of removed contributions||^2 smallest; the
    score is the removal position (first removed = least important)."""
    n = contrib.shape[0]
    Z = contrib.double()
    G = Z @ Z.T  # ||sum_{i in T} Z_i||^2 = sum_{i,j in T} G_ij: each step is O(n)
    removed = torch.zeros(n, dtype=torch.bool)
    cross = torch.zeros(n, dtype=torch.float64)  # sum_{i in T} G[i, r]
    score = torch.full((n,), float(n), dtype=torch.float64)
    for step in range(n - 1):
        err = 2 * cross + G.diagonal()
        err[removed] = float("inf")
        j = int(torch.argmin(err))
        removed[j] = True
        cross += G[j]
        score[j] = step
    return score


def lasso_scores(contrib: torch.Tensor) -> torch.Tensor:
    """He et al. channel selection (Eq. 1): LASSO path of  min ||Y - sum_j beta_j Z_j||^2 +
    lambda |beta|_1  with Y = sum_j Z_j; a channel's score is how early (at how large a lambda)
    it becomes non-zero, ties broken by |beta| at the smallest lambda."""
    from sklearn.linear_model import lasso_path

    Z = contrib.double()
    G = Z @ Z.T  # the LASSO only needs A^T A and A^T y (A = Z^T, y = sum_j Z_j)
    G = G + 1e-9 * G.diagonal().mean() * torch.eye(G.shape[0], dtype=G.dtype)
    R = torch.linalg.cholesky(G).T  # ||y - A b||^2 = ||R b - c||^2 + const
    c = torch.linalg.solve_triangular(R.T, G.sum(1, keepdim=True), upper=False).squeeze(1)
    scale = float(c.abs().max()) or 1.0
    with warnings.catch_warnings():  # early path points need not converge to rank entry order
        warnings.simplefilter("ignore")
        alphas, coefs, _ = lasso_path((R / scale).numpy(), (c / scale).numpy(), alphas=60,
                                      eps=1e-4, max_iter=300)
    active = abs(coefs) > 1e-12  # (channels, alphas), alphas descending
    n_alpha = active.shape[1]
    first = torch.tensor([row.argmax() if row.any() else n_alpha for row in active],
                         dtype=torch.float64)
    final = torch.tensor(abs(coefs[:, -1]), dtype=torch.float64)
    return (n_alpha - first) + final / (final.max() + 1e-12)
