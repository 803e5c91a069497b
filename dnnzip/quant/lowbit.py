"""``quant.linear`` and ``quant.log``: k-bit weights and activations (Hubara et al., QNN,
survey Eq. 15-16), post-training or trained with the straight-through estimator.

Linear (Eq. 15): per output channel, ``w ~ s q`` with q in [-(2^(k-1)-1), 2^(k-1)-1]; the clip
range ``s`` is the per-channel max |w| shrunk to the factor (of 11 in [0.5, 1]) with the least
squared error — QNN clips to [V_min, V_max] too, we pick the range per channel instead of one
global range because low bit widths are very sensitive to it. Stored code = q + 2^(k-1) - 1.

Log (Eq. 16): ``w ~ sign(w) s 2^e``, with s = 2^ceil(log2 max|w|) per channel (a power of two,
so the product is a shift) and e = round(log2(|w|/s)) in [-(2^(k-1)-2), 0]; smaller magnitudes
become 0. Code = sign << (k-1) | m, m = 0 for zero, else m = 2^(k-1) - 1 + e.

Activations are unsigned affine per tensor at ``act_bits`` (Eq. 10 with k bits; 0 = float).
The first and last layers keep ``first_last_bits`` (8 by default, as QNN and BNN do).
Codes live in a ``uint8`` buffer ``weight_codes`` hinted for bit-packing at k bits.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import torch
from torch import nn

from dnnzip.config import check_range, coerce_enum, coerce_tuple
from dnnzip.errors import ConfigError
from dnnzip.nn.spec import spec_module
from dnnzip.quant.affine import check_bits, round_ste
from dnnzip.quant.calibrate import Calibration
from dnnzip.quant.convert import Scheme, build, set_act
from dnnzip.quant.fold import QUANTIZABLE
from dnnzip.quant.modules import _QuantLayer, geometry
from dnnzip.quant.rnn import QuantRNN
from dnnzip.registry import Context, technique


class Mode(str, enum.Enum):
    LINEAR = "linear"
    LOG = "log"


def _ch(t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return t.reshape([-1] + [1] * (w.dim() - 1))


def linear_scale(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-channel step of the MSE-best clip range among 11 shrink factors of max |w|."""
    qmax = 2 ** (bits - 1) - 1
    amax = w.detach().abs().reshape(w.shape[0], -1).max(dim=1).values.clamp_min(1e-8)
    best, best_err = amax / qmax, None
    for f in torch.linspace(0.5, 1.0, 11).tolist():
        s = amax * f / qmax
        err = (torch.clamp(torch.round(w / _ch(s, w)), -qmax, qmax) * _ch(s, w) - w
               ).detach().pow(2).reshape(w.shape[0], -1).sum(1)
        best = s if best_err is None else torch.where(err < best_err, s, best)
        best_err = err if best_err is None else torch.minimum(err, best_err)
    return best


def linear_fq(w: torch.Tensor, bits: int) -> torch.Tensor:
    qmax = 2 ** (bits - 1) - 1
    s = _ch(linear_scale(w, bits), w)
    return torch.clamp(round_ste(w / s), -qmax, qmax) * s


def log_scale(w: torch.Tensor) -> torch.Tensor:
    amax = w.detach().abs().reshape(w.shape[0], -1).max(dim=1).values.clamp_min(1e-8)
    return torch.exp2(torch.ceil(torch.log2(amax)))


def log_codes(w: torch.Tensor, bits: int, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sign bit, magnitude index m) of Eq. 16 for weights ``w`` with per-channel scale ``s``."""
    m_max = 2 ** (bits - 1) - 1
    ratio = (w.detach().abs() / _ch(s, w)).clamp_min(1e-30)
    m = torch.round(torch.log2(ratio)) + m_max
    m = torch.where(m < 1, torch.zeros_like(m), m.clamp(max=m_max))
    return (w < 0).to(torch.int64), m.to(torch.int64)


def log_value(sign: torch.Tensor, m: torch.Tensor, bits: int, s: torch.Tensor) -> torch.Tensor:
    m_max = 2 ** (bits - 1) - 1
    mag = torch.where(m > 0, torch.exp2((m - m_max).float()), torch.zeros_like(m, dtype=torch.float))
    return (1 - 2 * sign).float() * mag * _ch(s, mag)


def log_fq(w: torch.Tensor, bits: int) -> torch.Tensor:
    s = log_scale(w)
    sign, m = log_codes(w, bits, s)
    q = log_value(sign, m, bits, s)
    return w + (q - w).detach()  # straight-through


class KBitLayer(_QuantLayer):
    """k-bit codes + per-channel scale; ``mode`` says how codes map back to reals."""

    def __init__(self, in_channels: int, out_channels: int, *, weight_bits: int = 4,
                 mode: str = "linear", **kw):
        super().__init__(in_channels, out_channels, **kw)
        check_bits(weight_bits, type(self).__name__, 2, 8)
        self.weight_bits, self.mode = weight_bits, Mode(mode).value
        self.register_buffer("weight_codes", torch.zeros(self.weight_shape, dtype=torch.uint8))
        self.register_buffer("weight_scale", torch.ones(out_channels))

    def spec_kwargs(self) -> dict:
        return dict(super().spec_kwargs(), weight_bits=self.weight_bits, mode=self.mode)

    def dnnzip_encodings(self) -> dict:
        return {"weight_codes": ("bitpack", {"bits": self.weight_bits})}

    def weight_float(self) -> torch.Tensor:
        codes = self.weight_codes.to(torch.int64)
        b = self.weight_bits
        if self.mode == "linear":
            return (codes - (2 ** (b - 1) - 1)).float() * _ch(self.weight_scale, codes)
        return log_value(codes >> (b - 1), codes & (2 ** (b - 1) - 1), b, self.weight_scale)

    def set_weight(self, w: torch.Tensor) -> None:
        b = self.weight_bits
        with torch.no_grad():
            if self.mode == "linear":
                s = linear_scale(w, b)
                qmax = 2 ** (b - 1) - 1
                q = torch.clamp(torch.round(w / _ch(s, w)), -qmax, qmax) + qmax
            else:
                s = log_scale(w)
                sign, m = log_codes(w, b, s)
                q = (sign << (b - 1)) | m
            self.weight_codes.copy_(q.to(torch.uint8))
            self.weight_scale.copy_(s)


@spec_module("quant.KBitLinear")
class KBitLinear(KBitLayer):
    kind = "linear"


@spec_module("quant.KBitConv1d")
class KBitConv1d(KBitLayer):
    kind = "conv1d"


@spec_module("quant.KBitConv2d")
class KBitConv2d(KBitLayer):
    kind = "conv2d"


_KBIT = {nn.Linear: KBitLinear, nn.Conv1d: KBitConv1d, nn.Conv2d: KBitConv2d}


def finalize_kbit(wrapper, bits: int, mode: Mode) -> nn.Module:
    layer = wrapper.layer
    kw = geometry(layer)
    kw["bias"] = layer.bias is not None
    mod = _KBIT[type(layer)](**kw, weight_bits=bits, mode=mode.value, act_bits=wrapper.act_bits,
                             relu=wrapper.relu)
    mod.set_weight(layer.weight.detach())
    if layer.bias is not None:
        mod.bias.copy_(layer.bias.detach())
    set_act(mod, wrapper)
    return mod


def weight_fq_for(bits: int, mode: Mode):
    return (lambda w: linear_fq(w, bits)) if mode == Mode.LINEAR else (lambda w: log_fq(w, bits))


def edge_layers(model: nn.Module, ignore=()) -> tuple[str, str]:
    """Names of the first and last Linear/Conv layers in module order."""
    names = [n for n, m in model.named_modules() if type(m) in QUANTIZABLE]
    return (names[0], names[-1]) if names else ("", "")


@dataclass(frozen=True)
class LowBitConfig:
    """bits: weight bit width k in [2, 8] (1 bit is ``quant.binary``).
    act_bits: activation bits in [2, 8], or 0 to keep float activations.
    first_last_bits: bits of the first and last layer (weights and activations), in [2, 8],
    or 0 to quantize them like the others.
    qat: fine-tune with the STE for ``ctx.epochs`` (else post-training only).
    calibration: activation range method ("minmax", "percentile", "mse").
    ignore: module names or "re:" patterns kept in float.
    """

    bits: int = 4
    act_bits: int = 8
    first_last_bits: int = 8
    qat: bool = True
    calibration: Calibration = Calibration.MSE
    calib_batches: int = 4
    ignore: tuple[str, ...] = ()

    def __post_init__(self):
        if self.bits == 1:
            raise ConfigError("The 'bits' parameter of LowBitConfig must be an int in [2, 8]. "
                              "Got 1 instead; use the 'quant.binary' technique for 1-bit weights.")
        check_range(self, "bits", 2, 8, integer=True)
        for name in ("act_bits", "first_last_bits"):
            check_range(self, name, 0, 8, integer=True)
            if getattr(self, name) == 1:
                check_range(self, name, 2, 8, integer=True)
        check_range(self, "calib_batches", 1, None, integer=True)
        coerce_enum(self, "calibration", Calibration)
        coerce_tuple(self, "ignore")


def quantize_lowbit(model: nn.Module, config: LowBitConfig, ctx: Context, mode: Mode,
                    bits_for: dict[str, int] | None = None) -> nn.Module:
    """Shared body of quant.linear / quant.log (and per-layer bits for quant.mixed)."""
    edges = set(edge_layers(model)) if config.first_last_bits else set()

    def wbits(name: str) -> int:
        if bits_for and name in bits_for:
            return bits_for[name]
        return config.first_last_bits if name in edges else config.bits

    def abits(name: str) -> int:
        if name in edges and config.first_last_bits:
            return max(config.first_last_bits, config.act_bits) if config.act_bits else 0
        return config.act_bits

    scheme = Scheme(weight_fq=lambda name, layer: weight_fq_for(wbits(name), mode),
                    finalize=lambda name, w: finalize_kbit(w, wbits(name), mode),
                    act_bits=abits)
    return build(model, scheme, ctx, ignore=config.ignore, technique=f"quant.{mode.value}",
                 method=config.calibration, calib_batches_n=config.calib_batches,
                 train=config.qat, rnn_rule=lambda name, rnn: QuantRNN.from_float(
                     rnn, bits=wbits(name)))


@technique("quant.linear", LowBitConfig)
def quantize_linear(model: nn.Module, config: LowBitConfig, ctx: Context) -> nn.Module:
    """k-bit uniform weights/activations (QNN linear quantization, survey Eq. 15)."""
    return quantize_lowbit(model, config, ctx, Mode.LINEAR)


@technique("quant.log", LowBitConfig)
def quantize_log(model: nn.Module, config: LowBitConfig, ctx: Context) -> nn.Module:
    """k-bit power-of-two weights (QNN logarithmic quantization, survey Eq. 16)."""
    return quantize_lowbit(model, config, ctx, Mode.LOG)
