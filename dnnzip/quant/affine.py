"""The affine quantization scheme of Jacob et al. 2018 (survey Eq. 10: R = W (Q - T)).

A real value ``r`` is represented by an integer ``q`` with a real *scale* ``s`` (the survey's W)
and an integer *zero point* ``z`` (T): ``r = s (q - z)``. Weights use a symmetric signed range per
output channel (``z = 0``, ``q`` in [-(2^(b-1)-1), 2^(b-1)-1], so int8 x int8 products never hit
-128 x -128); activations use an asymmetric unsigned range per tensor (``q`` in [0, 2^b - 1]), with
the real 0 exactly representable, as the paper requires for zero padding.

Quantization parameters are always finite and positive: a constant or all-zero tensor gets a
scale derived from its magnitude (or 1.0 for zeros) instead of the 0 / inf / NaN a naive
``(hi - lo) / (qmax - qmin)`` would give.
"""
from __future__ import annotations

import torch

from dnnzip.errors import ConfigError

_TINY = 1e-8


def check_bits(bits: int, where: str, low: int = 1, high: int = 8) -> None:
    """A bit width must be an int in [low, high]; anything else is a ConfigError."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not low <= bits <= high:
        raise ConfigError(
            f"The 'bits' parameter of {where} must be an int in [{low}, {high}]. Got {bits!r} "
            "instead.")


def qrange(bits: int, *, signed: bool, narrow: bool = False) -> tuple[int, int]:
    """Integer range of a ``bits``-wide code; ``narrow`` drops the most negative signed code."""
    if signed:
        return -(2 ** (bits - 1)) + int(narrow), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1


def asymmetric_qparams(lo: float, hi: float, *, bits: int = 8) -> tuple[float, int]:
    """Per-tensor (scale, zero_point) of an unsigned ``bits`` code covering [lo, hi] and 0."""
    qmin, qmax = qrange(bits, signed=False)
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not (torch.isfinite(torch.tensor([lo, hi])).all()):
        raise ConfigError(f"calibration range [{lo}, {hi}] is not finite; check the input data")
    span = hi - lo
    if span < _TINY:  # constant-zero activations: any scale works, 1.0 keeps it simple
        return 1.0, qmin
    scale = span / (qmax - qmin)
    zero_point = int(round(qmin - lo / scale))
    return float(scale), int(min(max(zero_point, qmin), qmax))


def symmetric_scales(w: torch.Tensor, *, bits: int = 8, axis: int | None = 0) -> torch.Tensor:
    """Per-channel (``axis``) or per-tensor (``axis=None``) scales for a signed narrow range."""
    _, qmax = qrange(bits, signed=True, narrow=True)
    if axis is None:
        amax = w.detach().abs().max().reshape(1)
    else:
        amax = w.detach().abs().transpose(0, axis).reshape(w.shape[axis], -1).max(dim=1).values
    scale = amax / max(qmax, 1)
    return torch.where(scale > _TINY, scale, torch.ones_like(scale)).float()


def quantize_weight(w: torch.Tensor, scale: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Signed integer codes (int64) of ``w`` with per-output-channel ``scale`` (axis 0)."""
    qmin, qmax = qrange(bits, signed=True, narrow=True)
    s = scale.reshape([-1] + [1] * (w.dim() - 1)) if scale.numel() > 1 else scale
    return torch.clamp(torch.round(w / s), qmin, qmax).to(torch.int64)


class _RoundSTE(torch.autograd.Function):
    """round() whose gradient is the identity (Bengio et al. 2013 straight-through estimator)."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, g):
        return g


def round_ste(x: torch.Tensor) -> torch.Tensor:
    return _RoundSTE.apply(x)


def fake_quant(x: torch.Tensor, scale, zero_point, qmin: int, qmax: int) -> torch.Tensor:
    """Quantize-dequantize with the clipped STE: gradient 1 inside the range, 0 where clipped.

    ``scale`` / ``zero_point`` may be tensors broadcastable to ``x`` (per-channel weights).
    """
    q = torch.clamp(round_ste(x / scale) + zero_point, qmin, qmax)
    return (q - zero_point) * scale


def act_fake_quant(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                   bits: int = 8) -> torch.Tensor:
    """Per-tensor unsigned activation fake-quant using buffers ``scale`` / ``zero_point``."""
    qmin, qmax = qrange(bits, signed=False)
    return fake_quant(x, scale.to(x.dtype), zero_point.to(x.dtype), qmin, qmax)


def sqnr_db(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio 10 log10(|ref|^2 / |ref - approx|^2) in dB."""
    ref = reference.detach().double()
    noise = (ref - approx.detach().double()).pow(2).sum().item()
    signal = ref.pow(2).sum().item()
    if noise == 0.0:
        return float("inf")
    return 10.0 * torch.log10(torch.tensor(signal / noise)).item()
