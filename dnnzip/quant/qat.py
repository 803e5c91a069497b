"""Quantization-aware training: fake-quantized layers trained with the straight-through estimator.

``FakeQuantLayer`` wraps a float Linear/Conv during calibration and training. Its forward is
what the integer module will compute — input fake-quant, weights through the scheme's
fake-quantizer, op, optional fused ReLU, output fake-quant — but the float weights stay the
trainable parameters and rounding passes gradients straight through (Jacob et al. 2018 Sec. 3;
Hubara et al. QNN Sec. 2 for the STE). Activation ranges follow an exponential moving average of
the batch min/max while training, starting from the calibrated range, as in Jacob et al.
It is never returned by a technique: ``convert.build`` replaces it by the final module.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dnnzip.quant.affine import asymmetric_qparams, fake_quant, qrange


class FakeQuantLayer(nn.Module):
    def __init__(self, layer: nn.Module, weight_fq: Callable[[torch.Tensor], torch.Tensor], *,
                 act_bits: int, relu: bool, in_range, out_range,
                 input_fn: nn.Module | None = None, momentum: float = 0.9):
        super().__init__()
        self.layer = copy.deepcopy(layer)
        self.weight_fq = weight_fq
        self.act_bits, self.relu, self.momentum = act_bits, relu, momentum
        self.input_fn = input_fn  # e.g. the sign() of binary activations
        self.register_buffer("in_range", torch.tensor(list(in_range), dtype=torch.float32))
        self.register_buffer("out_range", torch.tensor(list(out_range), dtype=torch.float32))

    def _op(self, x: torch.Tensor, w: torch.Tensor, b) -> torch.Tensor:
        m = self.layer
        if isinstance(m, nn.Linear):
            return F.linear(x, w, b)
        conv = F.conv2d if isinstance(m, nn.Conv2d) else F.conv1d
        return conv(x, w, b, m.stride, m.padding, m.dilation, m.groups)

    def _act(self, x: torch.Tensor, rng: torch.Tensor) -> torch.Tensor:
        if not self.act_bits:
            return x
        if self.training:
            with torch.no_grad():
                lo, hi = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
                rng.mul_(self.momentum).add_((1 - self.momentum) * torch.tensor([lo, hi]))
        scale, zp = asymmetric_qparams(*rng.tolist(), bits=self.act_bits)
        qmin, qmax = qrange(self.act_bits, signed=False)
        return fake_quant(x, scale, zp, qmin, qmax)

    def quantized_weight(self) -> torch.Tensor:
        return self.weight_fq(self.layer.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_fn(x) if self.input_fn is not None else self._act(x, self.in_range)
        y = self._op(x, self.quantized_weight(), self.layer.bias)
        if self.relu:
            y = torch.relu(y)
        return self._act(y, self.out_range)

    def weight_error_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Mean per-output-channel shift of the layer output caused by weight quantization."""
        diff = self._op(x, self.quantized_weight() - self.layer.weight, None)
        dims = [d for d in range(diff.dim()) if d != 1] if diff.dim() > 2 else [0]
        return diff.mean(dim=dims)


def train(model: nn.Module, ctx) -> None:
    """Fine-tune ``model`` in place for ``ctx.epochs`` (capped by ``ctx.max_batches``).

    Uses ``dnnzip.train.finetune`` when present (best-val restore, early stop), else a plain
    Adam + cross-entropy loop; either way the quantizers see every step.
    """
    try:
        from dnnzip.train import finetune
    except ImportError:
        finetune = None
    if finetune is not None:
        finetune(model, ctx)
        return
    torch.manual_seed(ctx.seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=ctx.lr)
    model.train()
    for epoch in range(ctx.epochs):
        loader = ctx.data.loader("train", batch_size=ctx.batch_size, shuffle=True,
                                 seed=ctx.seed + epoch)
        for i, (x, y) in enumerate(loader):
            if ctx.max_batches is not None and i >= ctx.max_batches:
                break
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    model.eval()
