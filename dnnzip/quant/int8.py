"""``quant.int8``: 8-bit integer quantization of Jacob et al. 2018 (survey Eq. 10), PTQ or QAT.

Weights: int8, symmetric, per output channel (per tensor as an option). Activations: uint8,
asymmetric, per tensor, range from calibration (min-max, percentile or MSE). BatchNorm is folded
into the preceding layer first; after weight quantization the per-channel output bias it causes
is corrected on the calibration data (Nagel et al. 2019). With ``qat=True`` the fake-quantized
model is fine-tuned for ``ctx.epochs`` with the STE before conversion. GRU/LSTM layers get int8
weights with float activations. The result exports to an ONNX QDQ graph with
``dnnzip.quant.onnx_qdq.export_int8`` that ONNX Runtime runs with integer kernels.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dnnzip.config import check_range, coerce_enum, coerce_tuple
from dnnzip.quant.affine import fake_quant, qrange, quantize_weight, symmetric_scales
from dnnzip.quant.calibrate import Calibration
from dnnzip.quant.convert import Scheme, build, set_act
from dnnzip.quant.modules import geometry, int8_class
from dnnzip.quant.rnn import QuantRNN
from dnnzip.registry import Context, technique


@dataclass(frozen=True)
class Int8Config:
    """calibration: how activation ranges are chosen ("minmax", "percentile", "mse").
    percentile: upper percentile for ``percentile`` calibration, in (50, 100].
    calib_batches: calibration batches of ``ctx.batch_size`` (from the calib split).
    per_channel: one weight scale per output channel (else one per tensor).
    fold_bn: fold BatchNorm into the preceding Conv/Linear before quantizing.
    bias_correction: remove the mean output shift caused by weight rounding.
    qat: fine-tune with fake quantization for ``ctx.epochs`` before converting.
    ignore: module names or "re:" patterns kept in float.
    """

    calibration: Calibration = Calibration.MINMAX
    percentile: float = 99.99
    calib_batches: int = 8
    per_channel: bool = True
    fold_bn: bool = True
    bias_correction: bool = True
    qat: bool = False
    ignore: tuple[str, ...] = ()

    def __post_init__(self):
        coerce_enum(self, "calibration", Calibration)
        check_range(self, "percentile", 50.0, 100.0, left_open=True)
        check_range(self, "calib_batches", 1, None, integer=True)
        coerce_tuple(self, "ignore")


def weight_fq(bits: int, per_channel: bool):
    """Per-channel symmetric weight fake-quant; scales follow the weights (QAT-friendly)."""
    qmin, qmax = qrange(bits, signed=True, narrow=True)

    def fq(w: torch.Tensor) -> torch.Tensor:
        s = symmetric_scales(w, bits=bits, axis=0 if per_channel else None)
        s = s.reshape([-1] + [1] * (w.dim() - 1)) if per_channel else s
        return fake_quant(w, s, 0, qmin, qmax)

    return fq


def finalize_int8(wrapper, per_channel: bool = True) -> nn.Module:
    layer = wrapper.layer
    kw = geometry(layer)
    kw["bias"] = layer.bias is not None
    mod = int8_class(layer)(**kw, act_bits=wrapper.act_bits, relu=wrapper.relu)
    w = layer.weight.detach()
    s = symmetric_scales(w, bits=8, axis=0 if per_channel else None)
    with torch.no_grad():
        mod.weight.copy_(quantize_weight(w, s, 8).to(torch.int8))
        mod.weight_scale.copy_(s.expand(mod.out_channels))
        if layer.bias is not None:
            mod.bias.copy_(layer.bias.detach())
    set_act(mod, wrapper)
    return mod


@technique("quant.int8", Int8Config)
def quantize_int8(model: nn.Module, config: Int8Config, ctx: Context) -> nn.Module:
    """Return an int8 copy of ``model`` (Jacob et al. 2018); the input is not modified."""
    scheme = Scheme(weight_fq=lambda name, layer: weight_fq(8, config.per_channel),
                    finalize=lambda name, w: finalize_int8(w, config.per_channel),
                    act_bits=lambda name: 8)
    return build(model, scheme, ctx, ignore=config.ignore, technique="quant.int8",
                 fold_bn=config.fold_bn, method=config.calibration,
                 percentile=config.percentile, calib_batches_n=config.calib_batches,
                 train=config.qat, bias_correction=config.bias_correction and not config.qat,
                 rnn_rule=lambda name, rnn: QuantRNN.from_float(rnn, bits=8))
