"""Quantized layers: rebuildable modules whose tensor state is integer codes in buffers.

``_QuantLayer`` holds what every scheme shares: the layer geometry (Linear / Conv1d / Conv2d),
a float bias, the per-tensor activation quantizers of its input and output (unsigned affine,
survey Eq. 10), and an optional fused ReLU applied before the output quantizer (Jacob et al.
quantize a layer's output after its activation function). Subclasses store the weight codes and
say how to turn them back into real weights. The int8 classes here store an ``int8`` buffer
``weight`` plus per-output-channel ``weight_scale`` (symmetric, zero point 0).

A layer whose ``act_bits`` is 0 keeps float activations (weights-only quantization).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dnnzip.nn.spec import spec_module
from dnnzip.quant.affine import act_fake_quant


def geometry(layer: nn.Module) -> dict:
    """Constructor geometry of a float Linear / Conv1d / Conv2d (JSON-able)."""
    if isinstance(layer, nn.Linear):
        return dict(in_channels=layer.in_features, out_channels=layer.out_features,
                    bias=layer.bias is not None)
    if isinstance(layer.padding, str):
        raise ValueError("string padding")  # caught by the converters: UnsupportedLayerError
    return dict(in_channels=layer.in_channels, out_channels=layer.out_channels,
                kernel_size=list(layer.kernel_size), stride=list(layer.stride),
                padding=list(layer.padding), dilation=list(layer.dilation),
                groups=layer.groups, bias=layer.bias is not None)


class _QuantLayer(nn.Module):
    kind = "linear"  # "linear" | "conv1d" | "conv2d"
    weight_bits = 8

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size=(), stride=(),
                 padding=(), dilation=(), groups: int = 1, bias: bool = True,
                 act_bits: int = 8, relu: bool = False, quant_input: bool = True,
                 quant_output: bool = True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = tuple(kernel_size), tuple(stride)
        self.padding, self.dilation, self.groups = tuple(padding), tuple(dilation), groups
        self.act_bits, self.relu = act_bits, relu
        self.quant_input, self.quant_output = quant_input, quant_output
        self.has_bias = bias
        self.register_buffer("bias", torch.zeros(out_channels) if bias else None)
        for side in ("in", "out"):
            self.register_buffer(f"{side}_scale", torch.ones(1))
            self.register_buffer(f"{side}_zp", torch.zeros(1, dtype=torch.int32))
        self._export = False  # set by dnnzip.quant.onnx_qdq while exporting

    # -- geometry ------------------------------------------------------------------------------
    @property
    def weight_shape(self) -> tuple[int, ...]:
        if self.kind == "linear":
            return (self.out_channels, self.in_channels)
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    def spec_kwargs(self) -> dict:
        kw = dict(in_channels=self.in_channels, out_channels=self.out_channels, bias=self.has_bias,
                  act_bits=self.act_bits, relu=self.relu, quant_input=self.quant_input,
                  quant_output=self.quant_output)
        if self.kind != "linear":
            kw.update(kernel_size=list(self.kernel_size), stride=list(self.stride),
                      padding=list(self.padding), dilation=list(self.dilation),
                      groups=self.groups)
        return kw

    def op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        if self.kind == "linear":
            return F.linear(x, w, b)
        conv = F.conv2d if self.kind == "conv2d" else F.conv1d
        return conv(x, w, b, self.stride, self.padding, self.dilation, self.groups)

    # -- scheme hooks ----------------------------------------------------------------------------
    def weight_float(self) -> torch.Tensor:
        raise NotImplementedError

    def bias_float(self) -> torch.Tensor | None:
        return self.bias

    def quant_in(self, x: torch.Tensor) -> torch.Tensor:
        if self.quant_input and self.act_bits:
            return act_fake_quant(x, self.in_scale, self.in_zp, self.act_bits)
        return x

    def quant_out(self, y: torch.Tensor) -> torch.Tensor:
        if self.quant_output and self.act_bits:
            return act_fake_quant(y, self.out_scale, self.out_zp, self.act_bits)
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.op(self.quant_in(x), self.weight_float(), self.bias_float())
        if self.relu:
            y = torch.relu(y)
        return self.quant_out(y)

    def set_act_qparams(self, side: str, scale: float, zero_point: int) -> None:
        getattr(self, f"{side}_scale").fill_(float(scale))
        getattr(self, f"{side}_zp").fill_(int(zero_point))

    def extra_repr(self) -> str:
        return (f"{self.kind}, {self.in_channels}->{self.out_channels}, w{self.weight_bits}"
                f"/a{self.act_bits}, relu={self.relu}")


class Int8Layer(_QuantLayer):
    """int8 weights (per-channel symmetric) + uint8 activations: Jacob et al. 2018."""

    def __init__(self, in_channels: int, out_channels: int, **kw):
        super().__init__(in_channels, out_channels, **kw)
        self.register_buffer("weight", torch.zeros(self.weight_shape, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_channels))

    def _ws(self) -> torch.Tensor:
        return self.weight_scale.reshape([-1] + [1] * (self.weight.dim() - 1))

    def weight_float(self) -> torch.Tensor:
        return self.weight.float() * self._ws()

    def bias_int32(self) -> torch.Tensor | None:
        """Bias as int32 at scale in_scale * weight_scale (Jacob et al. Sec. 2.4)."""
        if self.bias is None:
            return None
        s = self.in_scale * self.weight_scale
        return torch.clamp(torch.round(self.bias / s), -2**31, 2**31 - 1).to(torch.int32)

    def bias_float(self) -> torch.Tensor | None:
        if self.bias is None or not (self.quant_input and self.act_bits):
            return self.bias
        return self.bias_int32().float() * (self.in_scale * self.weight_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._export:
            from dnnzip.quant.onnx_qdq import export_forward
            return export_forward(self, x)
        return super().forward(x)


@spec_module("quant.QuantLinear")
class QuantLinear(Int8Layer):
    kind = "linear"


@spec_module("quant.QuantConv1d")
class QuantConv1d(Int8Layer):
    kind = "conv1d"


@spec_module("quant.QuantConv2d")
class QuantConv2d(Int8Layer):
    kind = "conv2d"


def int8_class(layer: nn.Module) -> type:
    return {nn.Linear: QuantLinear, nn.Conv1d: QuantConv1d, nn.Conv2d: QuantConv2d}[type(layer)]
