"""Activation range calibration for post-training quantization.

Three ways to pick the clipping range [lo, hi] of a per-tensor activation quantizer:

- ``minmax``: the observed extremes (Jacob et al. 2018 use EMA min/max; for PTQ over a few
  calibration batches plain min/max is the same idea);
- ``percentile``: the p-th / (100-p)-th percentiles, robust to a few outliers;
- ``mse``: the range among shrunk min/max candidates that minimizes the quantization MSE on the
  observed values (as in TensorRT / NNCF "MSE" range setting).

Observers keep exact min/max plus a bounded random sample of values, so memory stays small.
"""
from __future__ import annotations

import enum

import torch

from dnnzip.quant.affine import asymmetric_qparams, fake_quant, qrange


class Calibration(str, enum.Enum):
    MINMAX = "minmax"
    PERCENTILE = "percentile"
    MSE = "mse"


class Observer:
    """Accumulates what an activation quantizer needs to choose its range."""

    def __init__(self, *, sample_size: int = 65536, seed: int = 0):
        self.lo = float("inf")
        self.hi = float("-inf")
        self.sample_size = sample_size
        self._samples: list[torch.Tensor] = []
        self._kept = 0
        self._gen = torch.Generator().manual_seed(seed)

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().float().reshape(-1)
        if x.numel() == 0:
            return
        finite = x[torch.isfinite(x)]
        if finite.numel() == 0:
            return
        self.lo = min(self.lo, finite.min().item())
        self.hi = max(self.hi, finite.max().item())
        per_batch = max(1, self.sample_size // 8)
        if finite.numel() > per_batch:
            idx = torch.randint(0, finite.numel(), (per_batch,), generator=self._gen)
            finite = finite[idx]
        self._samples.append(finite)
        self._kept += finite.numel()
        if self._kept > 2 * self.sample_size:  # keep memory bounded
            allv = torch.cat(self._samples)
            idx = torch.randperm(allv.numel(), generator=self._gen)[: self.sample_size]
            self._samples, self._kept = [allv[idx]], self.sample_size

    @property
    def seen(self) -> bool:
        return self.lo <= self.hi

    def values(self) -> torch.Tensor:
        return torch.cat(self._samples) if self._samples else torch.zeros(1)

    def range(self, method: Calibration, *, percentile: float = 99.99, bits: int = 8
              ) -> tuple[float, float]:
        if not self.seen:
            return 0.0, 0.0
        lo, hi = min(self.lo, 0.0), max(self.hi, 0.0)
        if method == Calibration.MINMAX or hi - lo <= 0.0:
            return lo, hi
        v = self.values()
        if method == Calibration.PERCENTILE:
            q = torch.tensor([1.0 - percentile / 100.0, percentile / 100.0])
            plo, phi = torch.quantile(v.double(), q.double()).tolist()
            return min(plo, 0.0), max(phi, 0.0)
        return _mse_range(v, lo, hi, bits)


def _mse_range(v: torch.Tensor, lo: float, hi: float, bits: int) -> tuple[float, float]:
    """The shrink factor of [lo, hi] (grid of 40) with the least fake-quant MSE on ``v``."""
    qmin, qmax = qrange(bits, signed=False)
    best, best_err = (lo, hi), float("inf")
    for frac in torch.linspace(0.3, 1.0, 36).tolist():
        clo, chi = lo * frac, hi * frac
        scale, zp = asymmetric_qparams(clo, chi, bits=bits)
        err = (fake_quant(v, scale, zp, qmin, qmax) - v).pow(2).mean().item()
        if err < best_err:
            best, best_err = (clo, chi), err
    return best


def qparams_from(observer: Observer, method: Calibration, *, percentile: float = 99.99,
                 bits: int = 8) -> tuple[float, int]:
    """(scale, zero_point) for an activation; safe (finite, > 0) for constant or unseen data."""
    lo, hi = observer.range(method, percentile=percentile, bits=bits)
    return asymmetric_qparams(lo, hi, bits=bits)


def observe(model: torch.nn.Module, modules: dict[str, torch.nn.Module], batches,
            *, outputs: bool = True) -> tuple[dict[str, Observer], dict[str, Observer]]:
    """Run ``batches`` through ``model`` recording the inputs (and outputs) of ``modules``.

    Returns (input observers, output observers) keyed by module name.
    """
    ins = {name: Observer() for name in modules}
    outs = {name: Observer() for name in modules}
    handles = []
    for name, mod in modules.items():
        def hook(m, args, out, _n=name):
            ins[_n].update(args[0])
            if outputs and isinstance(out, torch.Tensor):
                outs[_n].update(out)
        handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            for x in batches:
                model(x)
    finally:
        for h in handles:
            h.remove()
    return ins, outs
