"""Bit-packed XNOR-popcount inference for binary Linear / Conv2d layers (XNOR-Net, BNN Sec. 3).

For +-1 vectors a, b of length n packed as bits (1 = +1), ``a . b = n - 2 popcount(a XOR b)``.
A layer output is ``beta * alpha_c * (a . b_c) + bias_c``: one XOR and one popcount per 64
weights instead of 64 multiply-adds. Convolution zero padding is not a +-1 value, so each
patch also carries a validity bitmask; the dot product counts only valid taps
(``n_valid - 2 popcount((a XOR b) AND valid)``), which is exactly what the float simulation's
zero-padded convolution computes.

``packed_inference(model, backend=...)`` makes every binary layer of ``model`` run this path:
``"c"`` is the compiled kernel ``dnnzip/kernels/xnor.c`` (each input pixel's channel signs are
packed once, a receptive field is kh*kw appends of those bits, then one XOR and one
``__builtin_popcountll`` per 64 weights, like the XNOR-popcount matrix-vector units of FINN),
``"numpy"`` the vectorised numpy version (im2col of bits), ``"auto"`` (default) C when a
compiler is available, else numpy. Both return the same integer dot products bit for bit; the
float scaling (``beta * alpha_c``, bias, ReLU) is shared torch code.
"""
from __future__ import annotations

import contextlib
import ctypes

import numpy as np
import torch

from dnnzip import kernels
from dnnzip.errors import ConfigError, UnsupportedLayerError

BACKENDS = ("auto", "c", "numpy")


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


def _geometry(mod, x: np.ndarray) -> tuple[int, ...]:
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (mod.kernel_size, mod.stride, mod.padding,
                                              mod.dilation)
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    return n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow


def _words(mod, lib) -> np.ndarray:
    """The layer's weight signs packed for the C kernel, cached until ``weight_codes`` changes."""
    codes = mod.weight_codes
    key = (codes.data_ptr(), codes._version, tuple(codes.shape))
    cached = getattr(mod, "_xnor_words", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    signs = codes.detach().numpy() != 0
    if signs.ndim == 4:  # the C conv kernel packs receptive fields in (kh, kw, C) order
        signs = signs.transpose(0, 2, 3, 1)
    rows = np.ascontiguousarray(signs.reshape(mod.out_channels, -1), dtype=np.uint8)
    words = np.empty((rows.shape[0], (rows.shape[1] + 63) // 64), dtype=np.uint64)
    lib.dz_xnor_pack(kernels.ptr(rows), ctypes.c_int64(rows.shape[0]),
                     ctypes.c_int64(rows.shape[1]), kernels.ptr(words))
    mod._xnor_words = (key, words)
    return words


def _fn(lib, name: str, n_int: int):
    """``lib.name`` with its argument types set once: pointers and int64s, float shift."""
    fn = getattr(lib, name)
    if getattr(fn, "_dz_typed", False):
        return fn
    P, I, F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
    fn.argtypes = {"dz_xnor_linear": [P, I, I, F, P, I, P],
                   "dz_xnor_conv2d": [P, I, I, I, I, F, P] + [I] * n_int + [P]}[name]
    fn.restype = ctypes.c_int
    fn._dz_typed = True
    return fn


def xnor_linear_c(mod, x: np.ndarray, lib) -> np.ndarray:
    xs = np.ascontiguousarray(x.reshape(x.shape[0], -1), dtype=np.float32)
    ww = _words(mod, lib)
    out = np.empty((xs.shape[0], mod.out_channels), dtype=np.int32)
    if _fn(lib, "dz_xnor_linear", 0)(xs.ctypes.data, xs.shape[0], xs.shape[1],
                                     float(mod.in_shift), ww.ctypes.data, mod.out_channels,
                                     out.ctypes.data):
        raise MemoryError("XNOR kernel could not allocate its row buffer")
    return out


def xnor_conv2d_c(mod, x: np.ndarray, lib) -> np.ndarray:
    xs = np.ascontiguousarray(x, dtype=np.float32)
    g = _geometry(mod, xs)
    ww = _words(mod, lib)
    out = np.empty((g[0], mod.out_channels, g[12], g[13]), dtype=np.int32)
    if _fn(lib, "dz_xnor_conv2d", 11)(xs.ctypes.data, *g[:4], float(mod.in_shift),
                                      ww.ctypes.data, mod.out_channels, *g[4:],
                                      out.ctypes.data):
        raise MemoryError("XNOR kernel could not allocate its patch buffers")
    return out


def resolve_backend(backend: str) -> str:
    """``auto`` -> ``c`` if the kernel compiles here, else ``numpy``; ``c`` without a working
    compiler is a ConfigError."""
    if backend not in BACKENDS:
        raise ConfigError(f"The 'backend' parameter of packed_inference must be one of "
                          f"{', '.join(map(repr, BACKENDS))}. Got {backend!r} instead.")
    if backend == "numpy":
        return backend
    if kernels.load("xnor") is not None:
        return "c"
    if backend == "c":
        raise ConfigError(f"the XNOR C kernel is unavailable ({kernels.why('xnor')}); install "
                          "a C compiler or use backend='numpy'")
    return "numpy"


def xnor_forward(mod, x: torch.Tensor) -> torch.Tensor:
    """The binary layer's output computed with XNOR + popcount on packed bits."""
    _check(mod)
    xn = x.detach().float().contiguous().numpy()
    backend = getattr(mod, "_xnor", True)
    backend = resolve_backend("auto" if backend is True else backend)
    if backend == "c":
        lib = kernels.load("xnor")
        dot = xnor_linear_c(mod, xn, lib) if mod.kind == "linear" else xnor_conv2d_c(mod, xn, lib)
    else:
        dot = xnor_linear(mod, xn) if mod.kind == "linear" else xnor_conv2d(mod, xn)
    shape = [1, -1] + [1] * (dot.ndim - 2)
    y = torch.from_numpy(dot.astype(np.float32))
    y = y * (mod.in_gain * mod.weight_scale).reshape(shape)
    if mod.bias is not None:
        y = y + mod.bias.reshape(shape)
    return torch.relu(y) if mod.relu else y


@contextlib.contextmanager
def packed_inference(model: torch.nn.Module, *, backend: str = "auto"):
    """Run every binary layer of ``model`` through the XNOR-popcount path inside the block;
    ``backend``: ``auto`` | ``c`` | ``numpy`` (see the module docstring)."""
    from dnnzip.quant.binary import BinaryLayer

    backend = resolve_backend(backend)
    mods = [m for m in model.modules() if isinstance(m, BinaryLayer)]
    for m in mods:
        _check(m)
        m._xnor = backend
    try:
        yield model
    finally:
        for m in mods:
            m._xnor = False
