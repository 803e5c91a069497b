"""Result reuse for continuous inference: DeepCache [76] / DeepMon [33].

``InferenceCache(model, mode=...)`` answers a sample from a cache of past results when it has
seen the same input (``exact``: hash of the input bytes) or a similar one (``similar``: cosine
similarity of a cheap descriptor -- the input average-pooled to ``size`` per spatial axis, or
a user ``features`` callable such as an early layer -- at least ``threshold``). Misses in a
batch run through the model in one call; entries are evicted least-recently-used.

Deviation: DeepCache and DeepMon reuse partial results per image *region* inside the
convolutions (block matching between consecutive frames). That needs a region-aware conv
kernel; here reuse is per whole input, which keeps the model untouched and still captures the
repetition of continuous sensing streams. ``evaluate_stream`` measures hit rate, latency per
sample and the accuracy change on a stream against the uncached model.
"""
from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dnnzip.errors import ConfigError, DataError

__all__ = ["InferenceCache", "evaluate_stream", "repetitive_stream"]


class InferenceCache:
    """Wrap ``model`` (eval mode) with a result cache; call it like the model on a batch."""

    def __init__(self, model: nn.Module, *, mode: str = "exact", threshold: float = 0.98,
                 capacity: int = 1024, size: int = 8,
                 features: Callable[[torch.Tensor], torch.Tensor] | None = None):
        if mode not in ("exact", "similar"):
            raise ConfigError(f"InferenceCache: mode must be 'exact' or 'similar'. Got {mode!r}.")
        if not isinstance(threshold, (int, float)) or not -1.0 <= threshold <= 1.0:
            raise ConfigError(f"InferenceCache: threshold (cosine similarity) must be a float in "
                              f"[-1, 1]. Got {threshold!r} instead.")
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ConfigError(f"InferenceCache: capacity must be an int >= 1. Got {capacity!r}.")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"InferenceCache: size must be an int >= 1. Got {size!r}.")
        self.model, self.mode, self.threshold = model.eval(), mode, float(threshold)
        self.capacity, self.size, self.features = capacity, size, features
        self._exact: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self._keys = torch.empty(0)  # (n, d) unit descriptors, similar mode
        self._vals: list[torch.Tensor] = []
        self._age: list[int] = []
        self._clock = 0
        self.hits = self.misses = 0

    # -- keys ---------------------------------------------------------------------------------
    @staticmethod
    def _hash(x: torch.Tensor) -> bytes:
        a = x.detach().contiguous().cpu().numpy()
        h = hashlib.blake2b(a.tobytes(), digest_size=16)
        h.update(str((a.shape, a.dtype.str)).encode())
        return h.digest()

    def describe(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-norm descriptors (batch, d) for similar matching."""
        if self.features is not None:
            with torch.no_grad():
                d = self.features(x)
        elif x.dim() == 4:
            d = F.adaptive_avg_pool2d(x, self.size)
        elif x.dim() == 3:
            d = F.adaptive_avg_pool1d(x, self.size)
        else:
            d = x
        d = d.flatten(1).float()
        return F.normalize(d - d.mean(1, keepdim=True), dim=1)  # centred: cosine = correlation

    # -- lookup -------------------------------------------------------------------------------
    def _lookup(self, x: torch.Tensor) -> tuple[list, Any]:
        if self.mode == "exact":
            keys = [self._hash(s) for s in x]
            found = []
            for k in keys:
                v = self._exact.get(k)
                if v is not None:
                    self._exact.move_to_end(k)
                found.append(v)
            return found, keys
        desc = self.describe(x)
        found = [None] * len(x)
        if len(self._vals):
            sim = desc @ self._keys.t()
            best, idx = sim.max(1)
            for i in range(len(x)):
                if float(best[i]) >= self.threshold:
                    j = int(idx[i])
                    found[i] = self._vals[j]
                    self._clock += 1
                    self._age[j] = self._clock
        return found, desc

    def _store(self, keys: Any, i: int, out: torch.Tensor) -> None:
        if self.mode == "exact":
            self._exact[keys[i]] = out
            if len(self._exact) > self.capacity:
                self._exact.popitem(last=False)
            return
        self._clock += 1
        if len(self._vals) < self.capacity:
            self._keys = torch.cat([self._keys.reshape(-1, keys.shape[1]), keys[i:i + 1]])
            self._vals.append(out)
            self._age.append(self._clock)
        else:
            j = int(np.argmin(self._age))  # least recently used
            self._keys[j] = keys[i]
            self._vals[j], self._age[j] = out, self._clock

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        found, keys = self._lookup(x)
        miss = [i for i, v in enumerate(found) if v is None]
        self.hits += len(x) - len(miss)
        self.misses += len(miss)
        if miss:
            with torch.no_grad():
                out = self.model(x[miss])
            for j, i in enumerate(miss):
                found[i] = out[j]
                self._store(keys, i, out[j])
        return torch.stack(found)

    @property
    def hit_rate(self) -> float:
        n = self.hits + self.misses
        return self.hits / n if n else 0.0

    def clear(self) -> None:
        self._exact.clear()
        self._keys, self._vals, self._age = torch.empty(0), [], []
        self.hits = self.misses = 0


def repetitive_stream(dataset: Any, n: int, *, repeat: float = 0.5, noise: float = 0.0,
                      window: int = 16, seed: int = 0) -> list[tuple[torch.Tensor, int]]:
    """A stream of ``n`` samples in which each item, with probability ``repeat``, re-shows one of
    the last ``window`` items (plus Gaussian ``noise`` x its std: a near-duplicate frame)."""
    if len(dataset) == 0 or n < 1:
        raise DataError(f"repetitive_stream: need a non-empty dataset and n >= 1 (got "
                        f"{len(dataset)} samples, n={n}).")
    rng = np.random.default_rng(seed)
    out: list[tuple[torch.Tensor, int]] = []
    for _ in range(n):
        if out and rng.random() < repeat:
            x, y = out[-1 - int(rng.integers(0, min(window, len(out))))]
            if noise > 0:
                g = torch.from_numpy(rng.standard_normal(tuple(x.shape)).astype(np.float32))
                x = x + noise * float(x.std()) * g
        else:
            x, y = dataset[int(rng.integers(0, len(dataset)))]
            x, y = torch.as_tensor(x), int(y)
        out.append((x, y))
    return out


def _run(fn: Callable, stream: list, batch: int) -> tuple[list[int], list[float], list[bool]]:
    preds, times, hit = [], [], []
    for s in range(0, len(stream), batch):
        xb = torch.stack([x for x, _ in stream[s:s + batch]])
        before = getattr(fn, "hits", 0)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = fn(xb)
        times.append((time.perf_counter() - t0) * 1e3 / len(xb))
        hit.append(getattr(fn, "hits", 0) - before == len(xb))  # the whole batch was answered
        preds += out.argmax(1).tolist()
    return preds, times, hit


def evaluate_stream(model: nn.Module, stream: Iterable[tuple[torch.Tensor, int]], *,
                    batch: int = 1, rounds: int = 1, **cache_options: Any) -> dict[str, Any]:
    """Run ``stream`` through the plain model and through a fresh ``InferenceCache``, ``rounds``
    times (plain and cached passes interleaved, so a change of machine load hits both).

    Returns the hit rate; per-sample latency (ms, measured wall clock, lookups included) as the
    median over samples -- ``latency_ms`` plain, ``cached_latency_ms`` cached, which is a *hit*'s
    cost once more than half the stream hits; ``hit_latency_ms`` / ``miss_latency_ms`` over the
    cached batches answered wholly from the cache / not (NaN when there are none) -- and as the
    mean (``*_mean_ms``); the whole
    stream's time (``total_ms``, ``cached_total_ms``, ``saved_total_ms``); ``saved_ms`` = mean
    per-sample saving; accuracy of both and the fraction of predictions that agree. Every timing
    is the median over the rounds. Empty stream -> DataError."""
    stream = list(stream)
    if not stream:
        raise DataError("evaluate_stream: the stream is empty; expected (x, y) samples. "
                        "Build one with dnnzip.cache.repetitive_stream(dataset, n).")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"evaluate_stream: rounds must be an int >= 1. Got {rounds!r}.")
    model = model.eval()
    stats: dict[str, list[float]] = {k: [] for k in ("med", "cmed", "mean", "cmean", "tot",
                                                      "ctot", "hit", "miss")}
    for _ in range(rounds):
        base, t_base, _ = _run(model, stream, batch)
        cache = InferenceCache(model, **cache_options)
        cached, t_cache, hit = _run(cache, stream, batch)
        for key, t in (("", t_base), ("c", t_cache)):
            stats[key + "med"].append(float(np.median(t)))
            stats[key + "mean"].append(float(np.mean(t)))
            stats[key + "tot"].append(float(np.sum(t)) * batch)
        t_cache, hit = np.asarray(t_cache), np.asarray(hit)
        stats["hit"].append(float(np.median(t_cache[hit])) if hit.any() else math.nan)
        stats["miss"].append(float(np.median(t_cache[~hit])) if (~hit).any() else math.nan)
    med = {k: float(np.median(v)) for k, v in stats.items()}
    ys = [int(y) for _, y in stream]
    acc = lambda p: sum(int(a == b) for a, b in zip(p, ys)) / len(ys)  # noqa: E731
    return {"samples": len(stream), "hit_rate": cache.hit_rate,
            "latency_ms": med["med"], "cached_latency_ms": med["cmed"],
            "latency_mean_ms": med["mean"], "cached_latency_mean_ms": med["cmean"],
            "hit_latency_ms": med["hit"], "miss_latency_ms": med["miss"],
            "total_ms": med["tot"], "cached_total_ms": med["ctot"],
            "saved_total_ms": med["tot"] - med["ctot"],
            "saved_ms": (med["tot"] - med["ctot"]) / len(stream),
            "accuracy": acc(base), "cached_accuracy": acc(cached),
            "accuracy_change": acc(cached) - acc(base),
            "agreement": sum(int(a == b) for a, b in zip(base, cached)) / len(ys),
            "how": f"measured (torch eager, wall clock per sample incl. lookups; median of "
                   f"{rounds} round(s))"}
