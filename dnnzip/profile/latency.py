"""Latency of one batch on a runtime session, *measured* with warm-up and repeats.

Each repeat times one call of the session's bound runner (input already converted, threads
already set) with ``time.perf_counter_ns``; p50/p95 are order statistics of the repeats (numpy's
linear interpolation), so one slow outlier moves the mean but not the median.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dnnzip.errors import ConfigError


@dataclass(frozen=True)
class LatencyStats:
    p50_ms: float
    p95_ms: float
    mean_ms: float
    repeats: int
    warmup: int
    threads: int
    batch_size: int
    runtime: str
    how: str = "measured"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _batch_size(x: Any) -> int:
    first = x[0] if isinstance(x, (tuple, list)) else x
    shape = getattr(first, "shape", ())
    return int(shape[0]) if len(shape) else 1


def time_latency(session: Any, x: Any, *, warmup: int = 20, repeats: int = 200) -> LatencyStats:
    """Time ``session`` (a runtime Session, see ``dnnzip.runtime``) on the batch ``x``."""
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ConfigError(f"The 'warmup' parameter of time_latency must be an int >= 0. "
                          f"Got {warmup!r} instead.")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ConfigError(f"The 'repeats' parameter of time_latency must be an int >= 1. "
                          f"Got {repeats!r} instead.")
    times = np.empty(repeats, dtype=np.float64)
    clock = time.perf_counter_ns
    with session.bind(x) as call:
        for _ in range(warmup):
            call()
        for i in range(repeats):
            t0 = clock()
            call()
            times[i] = clock() - t0
    times /= 1e6
    return LatencyStats(p50_ms=float(np.percentile(times, 50)),
                        p95_ms=float(np.percentile(times, 95)), mean_ms=float(times.mean()),
                        repeats=repeats, warmup=warmup, threads=session.threads,
                        batch_size=_batch_size(x), runtime=session.runtime)
