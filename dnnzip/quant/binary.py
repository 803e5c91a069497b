"""``quant.binary``: binary weights and activations (Courbariaux/Hubara et al., BNN, survey
Eq. 17-18) with XNOR-Net's per-channel scale (Rastegari et al. 2016).

Weights: ``w_b = alpha_c * Sign(w)`` (Eq. 17, Sign(0) = +1), ``alpha_c = mean |w_c|`` per output
channel (XNOR-Net). With ``mode="stochastic"`` training draws each sign with probability
``p = clip((w / alpha + 1) / 2, 0, 1)`` of +1 (Eq. 18, hard sigmoid on the scaled weight);
the stored codes are the deterministic signs of the trained weights, as BNN evaluates with
deterministic weights — Eq. 18 is a training-time regularizer there, a single random draw would
only add noise to the deployed model. Gradients pass straight through where |w| <= 1.

Activations: ``x_b = beta * Sign(x - t)`` per tensor. BNN binarizes tanh-like activations
around 0; after a ReLU every value is >= 0, so Sign(x) would be constant. We therefore subtract
a calibrated threshold ``t`` (the median of the layer input, so both signs occur; it plays the
role of BNN's BatchNorm shift) and rescale by ``beta = mean |x - t|`` (XNOR-Net's K for a
per-tensor granularity). The first and last layers keep 8-bit linear weights and activations by
default (``first_last_bits``), as BNN and XNOR-Net keep them in higher precision.
Codes: ``uint8`` 0/1 in ``weight_codes`` hinted for 1-bit packing; ``dnnzip.quant.xnor`` runs
them with XNOR + popcount.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import torch
from torch import nn

from dnnzip.config import check_range, coerce_enum, coerce_tuple
from dnnzip.errors import ConfigError
from dnnzip.nn.spec import spec_module
from dnnzip.quant.calibrate import Calibration
from dnnzip.quant.convert import Scheme, build, set_act
from dnnzip.quant.lowbit import edge_layers, finalize_kbit, linear_fq, Mode
from dnnzip.quant.modules import _QuantLayer, geometry
from dnnzip.registry import Context, technique


class BinaryMode(str, enum.Enum):
    DETERMINISTIC = "deterministic"
    STOCHASTIC = "stochastic"


class _SignSTE(torch.autograd.Function):
    """Sign with Sign(0) = +1 (Eq. 17); gradient 1{|x| <= 1} (BNN's htanh STE)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x.abs() <= 1).to(g.dtype)


def sign(x: torch.Tensor) -> torch.Tensor:
    return _SignSTE.apply(x)


def channel_alpha(w: torch.Tensor) -> torch.Tensor:
    return w.detach().abs().reshape(w.shape[0], -1).mean(1).clamp_min(1e-8)


def binary_weight_fq(mode: BinaryMode, seed: int):
    gen = torch.Generator().manual_seed(seed)

    def fq(w: torch.Tensor) -> torch.Tensor:
        a = channel_alpha(w).reshape([-1] + [1] * (w.dim() - 1))
        if mode == BinaryMode.STOCHASTIC and torch.is_grad_enabled() and w.requires_grad:
            p = torch.clamp((w.detach() / a + 1) / 2, 0, 1)
            b = torch.where(torch.rand(w.shape, generator=gen) < p, 1.0, -1.0)
            return a * (w + (b - w).detach())  # Eq. 18 forward, straight-through backward
        return a * sign(w)

    return fq


class BinaryInput(nn.Module):
    """Training-time activation binarizer ``beta * Sign(x - t)``."""

    def __init__(self, shift: float, gain: float):
        super().__init__()
        self.register_buffer("shift", torch.tensor([shift]))
        self.register_buffer("gain", torch.tensor([gain]))

    def forward(self, x):
        return self.gain * sign(x - self.shift)


def input_binarizer(observer) -> BinaryInput:
    v = observer.values()
    t = float(v.median()) if v.numel() else 0.0
    gain = float((v - t).abs().mean()) if v.numel() else 1.0
    return BinaryInput(t, gain if gain > 1e-8 else 1.0)


class BinaryLayer(_QuantLayer):
    weight_bits = 1

    def __init__(self, in_channels: int, out_channels: int, *, binarize_input: bool = True,
                 **kw):
        kw.update(act_bits=0, quant_input=False, quant_output=False)
        super().__init__(in_channels, out_channels, **kw)
        self.binarize_input = binarize_input
        self.register_buffer("weight_codes", torch.zeros(self.weight_shape, dtype=torch.uint8))
        self.register_buffer("weight_scale", torch.ones(out_channels))
        self.register_buffer("in_shift", torch.zeros(1))
        self.register_buffer("in_gain", torch.ones(1))

    def spec_kwargs(self) -> dict:
        kw = super().spec_kwargs()
        for k in ("act_bits", "quant_input", "quant_output"):
            kw.pop(k)
        return dict(kw, binarize_input=self.binarize_input)

    def dnnzip_encodings(self) -> dict:
        return {"weight_codes": ("bitpack", {"bits": 1})}

    def signs(self) -> torch.Tensor:
        return self.weight_codes.float() * 2 - 1

    def weight_float(self) -> torch.Tensor:
        return self.signs() * self.weight_scale.reshape([-1] + [1] * (self.weight_codes.dim() - 1))

    def quant_in(self, x: torch.Tensor) -> torch.Tensor:
        if not self.binarize_input:
            return x
        return self.in_gain * torch.where(x - self.in_shift >= 0, 1.0, -1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if getattr(self, "_xnor", False):
            from dnnzip.quant.xnor import xnor_forward
            return xnor_forward(self, x)
        return super().forward(x)


@spec_module("quant.BinaryLinear")
class BinaryLinear(BinaryLayer):
    kind = "linear"


@spec_module("quant.BinaryConv1d")
class BinaryConv1d(BinaryLayer):
    kind = "conv1d"


@spec_module("quant.BinaryConv2d")
class BinaryConv2d(BinaryLayer):
    kind = "conv2d"


_BIN = {nn.Linear: BinaryLinear, nn.Conv1d: BinaryConv1d, nn.Conv2d: BinaryConv2d}


def finalize_binary(wrapper) -> nn.Module:
    layer = wrapper.layer
    kw = geometry(layer)
    kw["bias"] = layer.bias is not None
    binp = wrapper.input_fn
    mod = _BIN[type(layer)](**kw, binarize_input=binp is not None, relu=wrapper.relu)
    with torch.no_grad():
        w = layer.weight.detach()
        mod.weight_codes.copy_((w >= 0).to(torch.uint8))
        mod.weight_scale.copy_(channel_alpha(w))
        if layer.bias is not None:
            mod.bias.copy_(layer.bias.detach())
        if binp is not None:
            mod.in_shift.copy_(binp.shift)
            mod.in_gain.copy_(binp.gain)
    return mod


@dataclass(frozen=True)
class BinaryConfig:
    """mode: "deterministic" (Eq. 17) or "stochastic" (Eq. 18, while training).
    binarize_activations: binarize the inputs of binary layers (BNN); False = weights only.
    first_last_bits: bits (2-8) of the first and last layer, 0 = binarize them too.
    qat: train with the STE for ``ctx.epochs`` (binary nets need it; PTQ alone is poor).
    ignore: module names or "re:" patterns kept in float.
    """

    mode: BinaryMode = BinaryMode.DETERMINISTIC
    binarize_activations: bool = True
    first_last_bits: int = 8
    qat: bool = True
    calib_batches: int = 4
    ignore: tuple[str, ...] = ()

    def __post_init__(self):
        coerce_enum(self, "mode", BinaryMode)
        check_range(self, "first_last_bits", 0, 8, integer=True)
        if self.first_last_bits == 1:
            raise ConfigError("The 'first_last_bits' parameter of BinaryConfig must be 0 or an "
                              "int in [2, 8]. Got 1 instead; use 0 to binarize every layer.")
        check_range(self, "calib_batches", 1, None, integer=True)
        coerce_tuple(self, "ignore")


@technique("quant.binary", BinaryConfig)
def quantize_binary(model: nn.Module, config: BinaryConfig, ctx: Context) -> nn.Module:
    """Binary weights (+ activations) with per-channel scale; the input is not modified."""
    edges = set(edge_layers(model)) if config.first_last_bits else set()
    k = config.first_last_bits

    def high(name):
        return name in edges

    scheme = Scheme(
        weight_fq=lambda name, layer: ((lambda w: linear_fq(w, k)) if high(name)
                                       else binary_weight_fq(config.mode, ctx.seed)),
        finalize=lambda name, w: finalize_kbit(w, k, Mode.LINEAR) if high(name)
        else finalize_binary(w),
        act_bits=lambda name: max(k, 8) if high(name) else 0,
        input_fn=lambda name, layer, obs: (input_binarizer(obs) if config.binarize_activations
                                           and not high(name) else None))
    return build(model, scheme, ctx, ignore=config.ignore, technique="quant.binary",
                 method=Calibration.MINMAX, calib_batches_n=config.calib_batches,
                 train=config.qat, rnn_rule=None)
