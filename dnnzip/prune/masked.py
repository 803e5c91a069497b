"""Masked layers: connection pruning's sparse weights, kept as a ``weight_mask`` buffer.

A masked layer is an ordinary ``Linear``/``Conv`` whose forward uses ``weight * weight_mask``, so
masks are enforced through any training loop (gradients of pruned weights are zero). For dynamic
network surgery (Guo et al. 2016, survey [42]) ``straight_through`` makes the forward use the
masked weight but passes the gradient to every weight, so pruned connections keep updating and
can be spliced back. The mask is a persistent buffer, so it is in the ``state_dict`` and the
artifact; the profiler reads ``weight_mask`` buffers for the effective MAC count.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dnnzip.nn.spec import conv_kwargs as _conv_kwargs
from dnnzip.nn.spec import spec_module


class _Masked:
    straight_through: bool = False

    def _init_mask(self) -> None:
        self.register_buffer("weight_mask", torch.ones_like(self.weight))

    def masked_weight(self) -> torch.Tensor:
        w = self.weight
        if self.straight_through and self.training:
            return w + (w * self.weight_mask - w).detach()
        return w * self.weight_mask

    @torch.no_grad()
    def apply_mask(self) -> None:
        """Make pruned weights exactly zero (what is stored and counted)."""
        # where(), not mul_(): a masked negative weight must become +0.0, not -0.0, so the
        # artifact's sparse encoding sees it as zero
        self.weight.copy_(torch.where(self.weight_mask.bool(), self.weight,
                                      torch.zeros_like(self.weight)))

    def sparsity(self) -> float:
        return 1.0 - float(self.weight_mask.mean())


@spec_module("prune.MaskedLinear")
class MaskedLinear(_Masked, nn.Linear):
    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        self._init_mask()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.masked_weight(), self.bias)

    def spec_kwargs(self) -> dict:
        return dict(in_features=self.in_features, out_features=self.out_features,
                    bias=self.bias is not None)


@spec_module("prune.MaskedConv1d")
class MaskedConv1d(_Masked, nn.Conv1d):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_mask()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.masked_weight(), self.bias)

    def spec_kwargs(self) -> dict:
        return _conv_kwargs(self)


@spec_module("prune.MaskedConv2d")
class MaskedConv2d(_Masked, nn.Conv2d):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_mask()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.masked_weight(), self.bias)

    def spec_kwargs(self) -> dict:
        return _conv_kwargs(self)


_MASKED = {nn.Linear: MaskedLinear, nn.Conv1d: MaskedConv1d, nn.Conv2d: MaskedConv2d}
MASKABLE = tuple(_MASKED)


def masked_copy_of(layer: nn.Module) -> nn.Module:
    """A masked layer with ``layer``'s weights (mask all ones); a masked layer is returned as is."""
    if isinstance(layer, _Masked):
        return layer
    cls = _MASKED[type(layer)]
    if cls is MaskedLinear:
        new = MaskedLinear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    else:
        kw = _conv_kwargs(layer)
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()}
        new = cls(**kw)
    new.load_state_dict({**layer.state_dict(), "weight_mask": torch.ones_like(layer.weight)})
    return new.to(layer.weight.device).train(layer.training)


def is_masked(m: nn.Module) -> bool:
    return isinstance(m, _Masked)


def masked_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _Masked)]


def sparsity_report(model: nn.Module) -> dict:
    """Per-layer and total fraction of masked-out weights, for the artifact and the profiler."""
    layers = {n: m.sparsity() for n, m in masked_layers(model)}
    total = sum(m.weight_mask.numel() for _, m in masked_layers(model))
    zeros = sum(int((m.weight_mask == 0).sum()) for _, m in masked_layers(model))
    return {"layers": layers, "total": zeros / total if total else 0.0}
