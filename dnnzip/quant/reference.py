"""Pure-integer reference inference for int8 Linear / Conv (Jacob et al. 2018, Sec. 2.2-2.4).

Everything after the input quantization is integer arithmetic, as on an MCU without an FPU:

    acc[c]  = sum_k (x_q[k] - z_x) * w_q[c, k] + b_q[c]                (int8 x int8 -> int32)
    y_q[c]  = clamp(z_y + round(M[c] * acc[c]), 0, 255),  M[c] = s_x s_w[c] / s_y

with the real multiplier ``M`` given as an int32 fixed-point ``M0`` in [2^30, 2^31) and a right
shift ``n`` (M = M0 2^-31 2^-n), applied with rounding as gemmlowp's
SaturatingRoundingDoublingHighMul + RoundingDivideByPOT. A fused ReLU is the clamp at ``z_y``.
ONNX Runtime requantizes with a float multiplier, so the two agree to within one code.
"""
from __future__ import annotations

import numpy as np

from dnnzip.errors import UnsupportedLayerError


def quantize_multiplier(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(M0 int64 holding int32 values, shift) with m = M0 * 2^-31 * 2^-shift, 0 < m < 1."""
    m = np.asarray(m, dtype=np.float64)
    mant, exp = np.frexp(m)                     # m = mant * 2^exp, mant in [0.5, 1)
    m0 = np.round(mant * (1 << 31)).astype(np.int64)
    carry = m0 == (1 << 31)
    m0 = np.where(carry, 1 << 30, m0)
    exp = np.where(carry, exp + 1, exp)
    return m0, (-exp).astype(np.int64)


def requantize(acc: np.ndarray, m0: np.ndarray, shift: np.ndarray, zero_point: int,
               relu: bool = False) -> np.ndarray:
    """int32 accumulators -> uint8 codes with integer-only rounding (channel axis = 1)."""
    acc = acc.astype(np.int64)
    shape = [1, -1] + [1] * (acc.ndim - 2)
    m0, shift = m0.reshape(shape), shift.reshape(shape)
    acc = acc << np.maximum(-shift, 0)                     # multipliers >= 1: shift left first
    prod = acc * m0                                        # fits in int64: |acc| < 2^31
    high = (prod + (1 << 30)) >> 31                        # rounding doubling high mul
    total = np.maximum(shift, 0)
    rounding = np.where(total > 0, 1 << np.maximum(total - 1, 0), 0)
    y = (high + rounding) >> total
    y = y + zero_point
    lo = zero_point if relu else 0
    return np.clip(y, lo, 255).astype(np.uint8)


def _im2col(xq: np.ndarray, zx: int, mod) -> tuple[np.ndarray, tuple[int, int]]:
    n, c, h, w = xq.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (mod.kernel_size, mod.stride, mod.padding,
                                              mod.dilation)
    x = np.pad(xq.astype(np.int32) - zx, ((0, 0), (0, 0), (ph, ph), (pw, pw)))  # real 0 = z_x
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=np.int32)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = x[:, :, i * dh: i * dh + sh * oh: sh, j * dw: j * dw + sw * ow: sw]
    return cols.reshape(n, c * kh * kw, oh * ow), (oh, ow)


def int8_layer(mod, xq: np.ndarray) -> np.ndarray:
    """Run one int8 layer (QuantLinear / QuantConv2d) on uint8 input codes; uint8 output codes."""
    if mod.kind not in ("linear", "conv2d") or (mod.kind == "conv2d" and mod.groups != 1):
        raise UnsupportedLayerError(
            f"the integer reference covers Linear and groups=1 Conv2d, not {mod.kind} "
            f"(groups={mod.groups}); compare that layer through ONNX Runtime instead.")
    zx, zy = int(mod.in_zp), int(mod.out_zp)
    wq = mod.weight.numpy().astype(np.int32).reshape(mod.out_channels, -1)
    bq = (mod.bias_int32().numpy().astype(np.int64) if mod.bias is not None
          else np.zeros(mod.out_channels, dtype=np.int64))
    m0, shift = quantize_multiplier(
        (mod.in_scale * mod.weight_scale / mod.out_scale).double().numpy())
    if mod.kind == "linear":
        acc = (xq.astype(np.int32) - zx) @ wq.T + bq                 # (N, C_out)
        return requantize(acc, m0, shift, zy, mod.relu)
    cols, (oh, ow) = _im2col(xq, zx, mod)
    acc = np.einsum("ok,nkp->nop", wq, cols, dtype=np.int64) + bq[None, :, None]
    y = requantize(acc, m0, shift, zy, mod.relu)
    return y.reshape(xq.shape[0], mod.out_channels, oh, ow)


def quantize_input(mod, x: np.ndarray) -> np.ndarray:
    """The input quantizer of ``mod`` (the only float step): round-half-even like ORT."""
    s, z = float(mod.in_scale), int(mod.in_zp)
    return np.clip(np.rint(x / s) + z, 0, 255).astype(np.uint8)
