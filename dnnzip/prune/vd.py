"""prune.vd: sparse variational dropout (Molchanov et al. 2017 [40], survey Eq. 6).

Every Linear/Conv weight gets a Gaussian posterior r(w) = N(theta, sigma^2) and the model is
trained on the variational lower bound of Eq. 6,
    L(phi) = L_D(phi) - D_KL(r_phi(theta) || p(theta)),
with the log-uniform prior, for which the KL has no closed form; Molchanov et al.'s fit is used:
    -KL ~= k1 sigmoid(k2 + k3 log a) - 0.5 log(1 + 1/a) - k1,  a = sigma^2 / theta^2,
k1, k2, k3 = 0.63576, 1.87320, 1.48695. Training uses the local reparameterisation trick (the
pre-activations are sampled, not the weights) and minimises cross-entropy + kl_weight * KL / N
(the per-sample form of -Eq. 6). Weights with log a > ``threshold`` (dropout rate near 1) are
pruned. The output keeps ``prune.Masked*`` layers with the pruned weights exactly zero, like
``prune.connection``; the variational parameters (log sigma^2) are dropped after training.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dnnzip.config import check_range, coerce_tuple
from dnnzip.prune._util import finetune, matches, set_module
from dnnzip.prune.masked import masked_copy_of, sparsity_report
from dnnzip.registry import Context, fresh_copy, technique

K1, K2, K3 = 0.63576, 1.87320, 1.48695


class _VD(nn.Module):
    """Wraps a Linear/Conv: theta = its weight, plus log sigma^2 per weight."""

    def __init__(self, layer: nn.Module, threshold: float, init_log_sigma2: float = -10.0):
        super().__init__()
        self.layer = layer
        self.threshold = threshold
        self.log_sigma2 = nn.Parameter(torch.full_like(layer.weight, init_log_sigma2))

    def log_alpha(self) -> torch.Tensor:
        w = self.layer.weight
        return torch.clamp(self.log_sigma2 - torch.log(w * w + 1e-8), -10.0, 10.0)

    def kl(self) -> torch.Tensor:
        la = self.log_alpha()
        neg_kl = K1 * torch.sigmoid(K2 + K3 * la) - 0.5 * F.softplus(-la) - K1
        return -neg_kl.sum()

    def _op(self, x, w, bias):
        m = self.layer
        if isinstance(m, nn.Linear):
            return F.linear(x, w, bias)
        conv = F.conv1d if isinstance(m, nn.Conv1d) else F.conv2d
        return conv(x, w, bias, m.stride, m.padding, m.dilation, m.groups)

    def forward(self, x):
        w, b = self.layer.weight, self.layer.bias
        if not self.training:
            return self._op(x, w * (self.log_alpha() < self.threshold), b)
        mu = self._op(x, w, b)
        var = self._op(x * x, torch.exp(self.log_sigma2), None)
        return mu + torch.sqrt(var + 1e-8) * torch.randn_like(mu)


@dataclass(frozen=True)
class VDPruneConfig:
    """Sparse variational dropout training, then pruning by log alpha.

    threshold: prune weights with log alpha above it (3.0 = dropout rate > 0.95, the paper's).
    kl_weight: weight of the KL term (1.0 = the exact per-sample ELBO of Eq. 6).
    ignore: layers (names or "re:" patterns) left deterministic and dense.
    Training length is ``ctx.epochs`` (and ``ctx.max_batches``).
    """

    threshold: float = 3.0
    kl_weight: float = 1.0
    ignore: tuple[str, ...] = ()

    def __post_init__(self):
        check_range(self, "threshold", -10.0, 10.0)
        check_range(self, "kl_weight", 0.0, 1e6)
        coerce_tuple(self, "ignore")


def _train_size(ctx: Context) -> int:
    ds = getattr(ctx.data, "train", None) if ctx.data is not None else None
    return max(len(ds), 1) if ds is not None else 1


@technique("prune.vd", VDPruneConfig)
def prune_vd(model: nn.Module, config: VDPruneConfig, ctx: Context) -> nn.Module:
    """Train with sparse variational dropout; return masked layers pruned by log alpha."""
    model = fresh_copy(model)
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d)
    names = [n for n, m in model.named_modules()
             if n and type(m) in kinds and not matches(n, config.ignore)]
    wrapped = {}
    for n in names:
        wrapped[n] = _VD(model.get_submodule(n), config.threshold)
        set_module(model, n, wrapped[n])
    scale = config.kl_weight / _train_size(ctx)

    def extra_loss(m, x, y, logits):
        return scale * sum(v.kl() for v in wrapped.values())

    finetune(model, ctx, extra_loss=extra_loss)
    with torch.no_grad():
        for n, v in wrapped.items():
            masked = masked_copy_of(v.layer)
            masked.weight_mask.copy_((v.log_alpha() < config.threshold).float())
            masked.apply_mask()
            set_module(model, n, masked)
    ctx.extra["prune.vd"] = sparsity_report(model)
    return model.eval()
