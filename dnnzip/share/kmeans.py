"""Weight sharing by k-means clustering: Deep Compression stage 2 (Han et al. 2016 [35];
survey Sec. IV-C, Eq. 13).

Each layer's weights W = {w_1..w_m} are partitioned into c << m clusters minimising
Σ_i Σ_{w ∈ c_i} |w − c_i|² (Eq. 13); every weight is then replaced by its centroid, so the layer
is stored as a codebook of 2^b floats plus a b-bit index per weight, entropy-coded in the ``.dnz``
(its ``codebook``/``sparse`` encodings are lossless on the clustered tensor). Following the paper:
centroids start *linearly* spaced between the layer's min and max weight (its best initialiser),
weights are not shared across layers, pruned weights (exact zeros, or ``weight_mask`` = 0) stay
zero and take no part in clustering, and the shared centroids are fine-tuned: the gradient of a
centroid is the sum of the gradients of its weights (the gather's backward does exactly this
grouped accumulation). Default widths are the paper's: 8 bits for conv, 5 for fully connected.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from dnnzip.config import check_range, coerce_tuple
from dnnzip.errors import ConfigError, UnsupportedLayerError
from dnnzip.registry import Context, fresh_copy, technique

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


@dataclass(frozen=True)
class KMeansShareConfig:
    """bits: index width of fully connected layers (paper: 5). conv_bits: of conv layers (paper:
    8). overrides: {"module name or re:pattern": bits}. ignore: layers left float. iterations:
    Lloyd iterations. finetune: fine-tune the centroids for ctx.epochs. max_bytes: if set, lower
    the widths (largest layers first) until the estimated index+codebook bytes fit.
    keep_masks: keep ``prune.Masked*`` layers with their ``weight_mask`` buffers; by default they
    become plain layers (the pruned weights are exact zeros in the shared weight), so the artifact
    does not store the mask a second time next to the zero pattern.
    distill, temperature, alpha: fine-tune the centroids with Hinton KD from ``ctx.teacher``
    (``dnnzip.distill.kd_loss_fn``) instead of cross-entropy — not in the paper; it recovers
    more accuracy at low widths when the dense model is at hand."""

    bits: int = 5
    conv_bits: int = 8
    overrides: dict = field(default_factory=dict)
    ignore: tuple[str, ...] = ()
    iterations: int = 25
    finetune: bool = True
    max_bytes: int | None = None
    keep_masks: bool = False
    distill: bool = False
    temperature: float = 4.0
    alpha: float = 0.9

    def __post_init__(self):
        check_range(self, "bits", 1, 8, integer=True)
        check_range(self, "conv_bits", 1, 8, integer=True)
        check_range(self, "iterations", 1, 1000, integer=True)
        coerce_tuple(self, "ignore")
        if not isinstance(self.overrides, dict) or not all(
                isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 8
                for v in self.overrides.values()):
            raise ConfigError("The 'overrides' parameter of KMeansShareConfig must map layer "
                              f"names to bit widths in [1, 8]. Got {self.overrides!r} instead.")
        if self.max_bytes is not None:
            check_range(self, "max_bytes", 1, None, integer=True)
        check_range(self, "temperature", 0.0, None, left_open=True)
        check_range(self, "alpha", 0.0, 1.0)
        for flag in ("finetune", "keep_masks", "distill"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"The {flag!r} parameter of KMeansShareConfig must be a bool. "
                                  f"Got {getattr(self, flag)!r} instead.")

    def __hash__(self):
        return hash((self.bits, self.conv_bits, tuple(sorted(self.overrides.items())),
                     self.ignore, self.iterations, self.finetune, self.max_bytes, self.keep_masks,
                     self.distill, self.temperature, self.alpha))


def matches(name: str, pattern: str) -> bool:
    return bool(re.fullmatch(pattern[3:], name)) if pattern.startswith("re:") else name == pattern


def kmeans_1d(values: np.ndarray, k: int, iterations: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's algorithm in one dimension with linear initialisation.

    Returns (sorted centroids, index of each value). Assignment uses the midpoints between sorted
    centroids (exact nearest centroid), so each iteration is O(m log k).
    """
    v = values.astype(np.float64)
    lo, hi = float(v.min()), float(v.max())
    k = max(1, min(k, len(np.unique(v))))
    c = np.linspace(lo, hi, k) if k > 1 else np.array([v.mean()])
    idx = np.zeros(len(v), dtype=np.int64)
    for _ in range(iterations):
        idx = np.searchsorted((c[1:] + c[:-1]) / 2, v)
        sums = np.bincount(idx, weights=v, minlength=k)
        counts = np.bincount(idx, minlength=k)
        new = np.where(counts > 0, sums / np.maximum(counts, 1), c)
        if np.allclose(new, c, rtol=0, atol=1e-12):
            c = new
            break
        c = np.sort(new)
    idx = np.searchsorted((c[1:] + c[:-1]) / 2, v)
    return c.astype(np.float32), idx


class _Shared(nn.Module):
    """Parametrization: the layer's weight is centroids[index] (times the keep mask)."""

    def __init__(self, centroids: np.ndarray, index: torch.Tensor, keep: torch.Tensor):
        super().__init__()
        self.centroids = nn.Parameter(torch.from_numpy(centroids.copy()))
        self.register_buffer("index", index)
        self.register_buffer("keep", keep)

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        # where, not "* keep": a negative centroid times 0 is -0.0, whose bits differ from 0.0,
        # and the packer's lossless sparse encoding would then have to store it as a value
        return torch.where(self.keep.bool(), self.centroids[self.index], 0.0)


def layer_bits(name: str, module: nn.Module, config: KMeansShareConfig) -> int | None:
    if any(matches(name, p) for p in config.ignore):
        return None
    for pattern, bits in config.overrides.items():
        if matches(name, pattern):
            return int(bits)
    return config.conv_bits if isinstance(module, (nn.Conv1d, nn.Conv2d)) else config.bits


def _keep_mask(module: nn.Module) -> torch.Tensor:
    w = module.weight.detach()
    keep = w != 0
    mask = getattr(module, "weight_mask", None)
    if isinstance(mask, torch.Tensor):
        keep &= mask.bool()
    return keep


def estimated_bytes(nnz: int, bits: int) -> float:
    """Index bits plus a float32 codebook: what ``share.kmeans`` adds per layer before coding."""
    return nnz * bits / 8 + 4 * (1 << bits)


def fit_budget(widths: dict[str, int], nnz: dict[str, int], max_bytes: int) -> dict[str, int]:
    """Lower the widths, one bit at a time on the layer that saves most, until the estimate fits."""
    widths = dict(widths)
    while sum(estimated_bytes(nnz[n], b) for n, b in widths.items()) > max_bytes:
        best = max((n for n in widths if widths[n] > 1),
                   key=lambda n: estimated_bytes(nnz[n], widths[n]) -
                   estimated_bytes(nnz[n], widths[n] - 1), default=None)
        if best is None:
            break
        widths[best] -= 1
    return widths


@technique("share.kmeans", KMeansShareConfig)
def share_kmeans(model: nn.Module, config: KMeansShareConfig, ctx: Context) -> nn.Module:
    """Cluster every Linear/Conv weight to 2^bits shared values; fine-tune the centroids."""
    model = fresh_copy(model)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, _LAYERS)}
    widths = {n: b for n, m in layers.items() if (b := layer_bits(n, m, config)) is not None}
    if not widths:
        raise UnsupportedLayerError(
            "share.kmeans found no Linear or Conv layer to cluster (after ignore=); RNN weights "
            "are not shared — add them to ignore= or quantize them with quant.linear instead")
    keeps = {n: _keep_mask(layers[n]) for n in widths}
    if config.max_bytes is not None:
        widths = fit_budget(widths, {n: int(k.sum()) for n, k in keeps.items()}, config.max_bytes)
    for name, bits in widths.items():
        m, keep = layers[name], keeps[name]
        values = m.weight.detach()[keep].numpy()
        if values.size == 0:
            continue
        centroids, idx = kmeans_1d(values, 1 << bits, config.iterations)
        index = torch.zeros(m.weight.shape, dtype=torch.long)
        index[keep] = torch.from_numpy(idx)
        parametrize.register_parametrization(m, "weight",
                                             _Shared(centroids, index, keep.float()),
                                             unsafe=True)
        m.parametrizations.weight.original.requires_grad_(False)
    if config.finetune and ctx.data is not None and ctx.epochs > 0:
        from dnnzip.train import finetune
        hooks = {}
        if config.distill:
            if ctx.teacher is None:
                raise ConfigError("share.kmeans with distill=True needs the dense model as "
                                  "ctx.teacher")
            from dnnzip.distill import kd_loss_fn
            hooks["loss_fn"] = kd_loss_fn(ctx.teacher, T=config.temperature, alpha=config.alpha)
        finetune(model, ctx, **hooks)
    for name in widths:
        m = layers[name]
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
            m.weight.requires_grad_(True)
    if not config.keep_masks:
        for name in widths:
            if hasattr(layers[name], "weight_mask"):
                _set_module(model, name, _plain(layers[name]))
    model.eval()
    model._dnnzip_share_bits = dict(widths)
    return model


def _plain(m: nn.Module) -> nn.Module:
    """The plain torch layer (Linear/Conv) carrying a masked layer's (already zeroed) weights."""
    base = next(c for c in type(m).__mro__ if c in _LAYERS)
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in m.spec_kwargs().items()}
    plain = base(**kwargs)
    with torch.no_grad():
        plain.weight.copy_(torch.where(m.weight_mask.bool(), m.weight, 0.0))  # +0.0, not -0.0
        if m.bias is not None:
            plain.bias.copy_(m.bias)
    return plain.train(m.training)


def _set_module(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, child, new)  # Sequential children are attributes too (names "0", "1", ...)


def distinct_values(model: nn.Module) -> dict[str, int]:
    """Distinct non-zero weight values per shared layer (a check that sharing held)."""
    return {n: int(torch.unique(m.weight.detach()[m.weight.detach() != 0]).numel())
            for n, m in model.named_modules() if isinstance(m, _LAYERS)}


def bits_needed(k: int) -> int:
    return max(1, math.ceil(math.log2(max(k, 1))))
