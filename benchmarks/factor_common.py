"""Shared helpers for the factor / design / nest benchmarks: cached baseline training,
measured latency and MACs, markdown tables. Weights are cached under /tmp (never in the repo)."""
from __future__ import annotations

import os
import platform

import torch

from dnnzip import zoo
from dnnzip.data import load_data
from dnnzip.profile.counts import count_macs, total_macs
from dnnzip.profile.latency_model import measure_model
from dnnzip.train import TrainSettings, evaluate, fit

CACHE = os.environ.get("DNNZIP_BENCH_CACHE", "/tmp/dnnzip_bench")


def data_for(name: str, quick: bool, seed: int = 0):
    spec = zoo.info(name)["dataset"]
    return load_data(spec, seed=seed, limit=(4000 if quick else 20000))


def trained(name: str, data, *, epochs: int, seed: int = 0, lr: float = 1e-3, **kw):
    """``name`` trained on ``data`` (cached in /tmp by name, epochs, data size and seed)."""
    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(CACHE, f"{name}-{epochs}-{len(data.train)}-{seed}-{lr}.pt")
    torch.manual_seed(seed)
    model = zoo.build(name, **kw)
    if os.path.exists(path):
        model.load_state_dict(torch.load(path, weights_only=True))
    else:
        fit(model, data, TrainSettings(epochs=epochs, seed=seed, lr=lr, progress=False,
                                       patience=None))
        torch.save(model.state_dict(), path)
    return model.eval()


def finetune_settings(epochs: int, seed: int = 0, lr: float = 5e-4) -> TrainSettings:
    return TrainSettings(epochs=epochs, seed=seed, lr=lr, progress=False, patience=None)


def params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def macs(model, x) -> int:
    return total_macs(count_macs(model, x[:1]))


def latency(model, x, repeats: int = 50, rounds: int = 3) -> float:
    """ms, batch 1, torch eager, 1 thread: the lowest of ``rounds`` 10th percentiles of
    ``repeats`` calls (the machine is shared; the low end is the model, the rest is others)."""
    return min(measure_model(model, x[:1], repeats=repeats, warmup=10) for _ in range(rounds))


def acc(model, data) -> float:
    return evaluate(model, data)


def table(rows: list[dict], cols: list[str]) -> str:
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def machine() -> str:
    return (f"{platform.machine()} {os.cpu_count()}-core CPU (shared), torch {torch.__version__}, "
            f"1 thread, python {platform.python_version()}")
