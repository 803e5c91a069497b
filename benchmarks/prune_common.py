"""Shared helpers of the pruning benchmarks: data, training, accuracy, MACs, latency, tables."""
from __future__ import annotations

import platform

import time

import torch

from dnnzip import zoo
from dnnzip.data import load_data
from dnnzip.profile.counts import count_macs, total_macs
from dnnzip.train import TrainSettings, evaluate, fit


def fashion(limit: int | None, seed: int = 0):
    return load_data("fashion-mnist", limit=limit, seed=seed)


def trained(name: str, data, epochs: int, lr: float = 1e-3, seed: int = 0, **kw):
    torch.manual_seed(seed)
    model = zoo.build(name, **kw)
    fit(model, data, TrainSettings(epochs=epochs, lr=lr, batch_size=128, seed=seed))
    return model.eval()


def accuracy(model, data) -> float:
    return float(evaluate(model.eval(), data.test))


def macs(model, x, effective: bool = False) -> int:
    return int(total_macs(count_macs(model, x[:1]), effective=effective))


def params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def latency_ms(model, x, runtime: str = "torch", repeats: int = 50) -> float:
    """Median latency of one call on ``runtime`` with 1 thread (dnnzip.runtime)."""
    from dnnzip.runtime import get_runtime
    rt = get_runtime(runtime)
    session = rt.prepare(model.eval(), x, threads=1)
    stats = rt.time(session, x, warmup=max(5, repeats // 5), repeats=repeats)
    return float(stats.p50_ms)


def interleaved_times(cases: dict, repeats: int = 50, rounds: int = 3,
                      rotate: bool = False) -> dict:
    """Per-call latencies (ms) of several cases timed in interleaved rounds (dnnzip.runtime
    sessions, 1 thread): ``cases`` maps a key to (model, input, runtime, repeats or None); each
    round times every case once, so load drift on a shared machine hits every case alike.
    ``rotate``: round r starts at case r (mod n), so no case always runs right after the same
    neighbour (a batch-64 call or an ONNX Runtime session leaves the caches and the CPU in a
    different state for whatever is timed next). Returns key -> list (one per round) of
    per-call times."""
    import time

    from dnnzip.runtime import get_runtime
    prepared = {}
    for key, (model, x, runtime, rep) in cases.items():
        prepared[key] = (get_runtime(runtime).prepare(model.eval(), x, threads=1), x,
                         rep or repeats)
    got: dict = {key: [] for key in cases}
    order = list(prepared.items())
    for r in range(rounds):
        shift = r % len(order) if rotate and order else 0
        for key, (session, x, rep) in order[shift:] + order[:shift]:
            times = []
            with session.bind(x) as call:
                for _ in range(max(3, rep // 10)):
                    call()
                for _ in range(rep):
                    t0 = time.perf_counter_ns()
                    call()
                    times.append((time.perf_counter_ns() - t0) / 1e6)
            got[key].append(times)
    return got


def median_p50(rounds: list) -> float:
    """The median over rounds of each round's median call (the headline figure)."""
    import numpy as np
    return float(np.median([np.percentile(r, 50) for r in rounds]))


def low_p10(rounds: list) -> float:
    """The lowest over rounds of each round's 10th percentile: the low end is the model, the
    rest is other jobs on a shared machine (the convention of benchmarks/factor_common.py)."""
    import numpy as np
    return float(min(np.percentile(r, 10) for r in rounds))


def interleaved_ms(cases: dict, repeats: int = 50, rounds: int = 3) -> dict:
    """key -> median over interleaved rounds of the p50 (ms); see ``interleaved_times``."""
    return {k: median_p50(v) for k, v in interleaved_times(cases, repeats, rounds).items()}


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, shared 2-core CPU, torch "
            f"{torch.__version__}, 1 thread")


def table(rows: list[dict], cols: list[str]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(out)


class Timer:
    def __enter__(self):
        self.t = time.perf_counter()
        return self

    def __exit__(self, *a):
        self.s = time.perf_counter() - self.t


