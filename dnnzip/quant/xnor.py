"""Bit-packed XNOR-popcount inference for binary Linear / Conv2d layers (XNOR-Net, BNN Sec. 3).

For +-1 vectors a, b of length n packed as bits (1 = +1), ``a . b = n - 2 popcount(a XOR b)``.
A layer output is ``beta * alpha_c * (a . b_c) + bias_c``: one XOR and one popcount per 64
weights instead of 64 multiply-adds. Convolution zero padding is not a +-1 value, so each
patch also carries a validity bitmask; the dot product counts only valid taps
(``n_valid - 2 popcount((a XOR b) AND valid)``), which is exactly what the float simulation's
zero-padded convolution computes.

``packed_inference(model)`` makes every binary layer of ``model`` run this path (numpy).
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from dnnzip.errors import UnsupportedLayerError


def pack_rows(bits: np.ndarray) -> np.ndarray:
    """Pack booleans along the last axis into uint64 words (zero-padded)."""
    packed = np.packbits(bits, axis=-1)
    pad = (-packed.shape[-1]) % 8
    if pad:
        packed = np.concatenate(
            [packed, np.zeros(packed.shape[:-1] + (pad,), dtype=np.uint8)], axis=-1)
    return np.ascontiguousarray(packed).view(np.uint64)


def _popcount_dot(xw: np.ndarray, ww: np.ndarray, valid: np.ndarray | None = None):
    """(..., W) x (O, W) words -> (popcount of differing valid bits (..., O), valid taps)."""
    diff = xw[..., None, :] ^ ww
    if valid is None:
        return np.bitwise_count(diff).sum(-1, dtype=np.int64), None
    diff &= valid[..., None, :]
    return (np.bitwise_count(diff).sum(-1, dtype=np.int64),
            np.bitwise_count(valid).sum(-1, dtype=np.int64)[..., None])


def _check(mod) -> None:
    if not mod.binarize_input or mod.kind not in ("linear", "conv2d") or mod.groups != 1:
        raise UnsupportedLayerError(
            f"XNOR path covers binary Linear / groups=1 Conv2d with binary inputs, not "
            f"{type(mod).__name__}(binarize_input={mod.binarize_input}, groups={mod.groups}).")


def xnor_linear(mod, x: np.ndarray) -> np.ndarray:
    xb = x.reshape(x.shape[0], -1) - float(mod.in_shift) >= 0
    ww = pack_rows(mod.weight_codes.numpy().astype(bool))
    pop, _ = _popcount_dot(pack_rows(xb), ww)
    return xb.shape[1] - 2 * pop                                    # (N, O)


def xnor_conv2d(mod, x: np.ndarray, chunk: int = 64) -> np.ndarray:
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (mod.kernel_size, mod.stride, mod.padding,
                                              mod.dilation)
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    ww = pack_rows(mod.weight_codes.numpy().astype(bool).reshape(mod.out_channels, -1))
    bits = np.pad(x - float(mod.in_shift) >= 0, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    valid = np.pad(np.ones((1, c, h, w), dtype=bool), ((0, 0), (0, 0), (ph, ph), (pw, pw)))

    def patches(a):
        cols = np.empty((a.shape[0], c, kh, kw, oh, ow), dtype=bool)
        for i in range(kh):
            for j in range(kw):
                cols[:, :, i, j] = a[:, :, i * dh: i * dh + sh * oh: sh,
                                     j * dw: j * dw + sw * ow: sw]
        return cols.reshape(a.shape[0], c * kh * kw, oh * ow).transpose(0, 2, 1)

    vw = pack_rows(patches(valid))[0]                               # (P, W)
    out = np.empty((n, oh * ow, mod.out_channels), dtype=np.int64)
    for s in range(0, n, chunk):
        pop, nvalid = _popcount_dot(pack_rows(patches(bits[s:s + chunk])), ww, vw)
        out[s:s + chunk] = nvalid - 2 * pop
    return out.transpose(0, 2, 1).reshape(n, mod.out_channels, oh, ow)


def xnor_forward(mod, x: torch.Tensor) -> torch.Tensor:
    """The binary layer's output computed with XNOR + popcount on packed bits."""
    _check(mod)
    xn = x.detach().numpy()
    dot = xnor_linear(mod, xn) if mod.kind == "linear" else xnor_conv2d(mod, xn)
    shape = [1, -1] + [1] * (dot.ndim - 2)
    y = torch.from_numpy(dot.astype(np.float32))
    y = y * (mod.in_gain * mod.weight_scale).reshape(shape)
    if mod.bias is not None:
        y = y + mod.bias.reshape(shape)
    return torch.relu(y) if mod.relu else y


@contextlib.contextmanager
def packed_inference(model: torch.nn.Module):
    """Run every binary layer of ``model`` through the XNOR-popcount path inside the block."""
    from dnnzip.quant.binary import BinaryLayer

    mods = [m for m in model.modules() if isinstance(m, BinaryLayer)]
    for m in mods:
        _check(m)
        m._xnor = True
    try:
        yield model
    finally:
        for m in mods:
            m._xnor = False
