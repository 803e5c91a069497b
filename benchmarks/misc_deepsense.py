"""Claim (DeepSense [69] as a compression target): the zoo's DeepSense CNN+GRU sensor model,
trained on a real offline time-series dataset, shrinks with dnnzip's families (channel pruning,
SVD of the GRU gates, int8, weight sharing) to a fraction of its packed bytes while keeping most
of its accuracy after reload.

    .venv/bin/python benchmarks/misc_deepsense.py            # 3 seeds, 40 + 8 epochs
    .venv/bin/python benchmarks/misc_deepsense.py --quick    # 1 seed, 10 + 2 epochs

Data: MNIST-1D (Greydanus 2020; ``load_data("mnist1d")``, generated offline by the ``mnist1d``
package: 3,600 train / 400 val / 1,000 test signals of 40 samples, 10 classes). No sensor
dataset (HAR etc.) is among the loaders, so MNIST-1D stands in for one accelerometer axis.

Channel mapping. DeepSense takes (N, C, T*tau): C sensor axes, T time intervals of tau samples.
MNIST-1D has one axis, so C = 1 and the 40-sample signal is cut into T = 8 intervals of tau = 5
samples (the zoo default ``intervals=8``); the per-interval Conv1d stack (3 x 32 channels, k=3)
runs on each 5-sample interval, its output is average-pooled over the interval, and the 2-layer
GRU (hidden 64) runs over the 8 intervals. The paper's per-sensor conv stacks and the merge conv
over sensors collapse to the single stack with one sensor (zoo deviation, dnnzip/zoo/sequence.py);
no FFT pre-processing.

Every row is packed to a real ``.dnz``, reloaded with ``unpack`` and measured on the reloaded
model: bytes = file size, accuracy on the 1,000 test signals, MACs (``dnnzip.profile.counts``,
dense), latency (batch 1, torch eager, 1 thread; lowest of 3 rounds of the 10th percentile of
50 calls). Fine-tuning after each technique uses the train split for ``--ft-epochs``.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.factor_common import acc, latency, machine, macs, params, table, trained
from dnnzip import registry
from dnnzip.artifact import pack, unpack
from dnnzip.data import load_data
from dnnzip.registry import Context

# (row name, [(technique, options), ...]); fine-tuning is each technique's own option/ctx.epochs
VARIANTS = [
    ("original (float32)", []),
    ("prune.channel 0.5 (l1) + FT", [("prune.channel", {"ratio": 0.5})]),
    ("factor.svd energy 0.9 (GRU + fc) + FT", [("factor.svd", {"energy": 0.9, "rnn": True,
                                                              "finetune": True})]),
    ("quant.int8 PTQ", [("quant.int8", {})]),
    ("share.kmeans 5-bit fc / 8-bit conv + FT", [("share.kmeans", {"bits": 5, "conv_bits": 8})]),
    ("prune.channel 0.5 + FT -> quant.int8", [("prune.channel", {"ratio": 0.5}),
                                              ("quant.int8", {})]),
    ("prune.channel 0.5 + FT -> factor.svd 0.9 + FT", [
        ("prune.channel", {"ratio": 0.5}),
        ("factor.svd", {"energy": 0.9, "rnn": True, "finetune": True})]),
]


def run_variant(base, steps, data, x, ft_epochs, seed, folder):
    ctx = Context(data=data, teacher=base, example_input=x, epochs=ft_epochs, lr=1e-3, seed=seed)
    model = base
    for name, opts in steps:
        model = registry.apply(name, model, opts, ctx)
    path = os.path.join(folder, f"m{seed}.dnz")
    size = pack(model, path)
    loaded = unpack(path)
    return {"bytes": size, "params": params(loaded), "macs": macs(loaded, x),
            "accuracy": acc(loaded, data), "latency_ms": latency(loaded, x)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--epochs", type=int, default=None, help="baseline training epochs")
    ap.add_argument("--ft-epochs", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    epochs = args.epochs or (10 if args.quick else 40)
    ft = args.ft_epochs if args.ft_epochs is not None else (2 if args.quick else 8)
    seeds = list(range(args.seeds or (1 if args.quick else 3)))
    t0 = time.perf_counter()
    results: dict[str, list[dict]] = {n: [] for n, _ in VARIANTS}
    errors: dict[str, str] = {}
    for seed in seeds:
        data = load_data("mnist1d", seed=seed)
        x = data.example_input(8)
        base = trained("deepsense", data, epochs=epochs, seed=seed, lr=3e-3)
        with tempfile.TemporaryDirectory() as d:
            for name, steps in VARIANTS:
                if name in errors:
                    continue
                try:
                    results[name].append(run_variant(base, steps, data, x, ft, seed, d))
                except Exception as exc:  # report, do not hide: the row says what failed
                    errors[name] = f"{type(exc).__name__}: {exc}"
                    traceback.print_exc()
    wall = time.perf_counter() - t0

    def ms(vals, fmt):
        v = np.asarray(vals, float)
        return (fmt + " ± " + fmt).format(v.mean(), v.std()) if len(v) > 1 else fmt.format(v[0])

    rows = []
    ref = np.mean([r["bytes"] for r in results[VARIANTS[0][0]]])
    for name, _ in VARIANTS:
        r = results[name]
        if not r:
            rows.append({"model": name, "bytes": "failed: " + errors.get(name, "?")[:120]})
            continue
        rows.append({"model": name, "bytes": ms([e["bytes"] for e in r], "{:.0f}"),
                     "x_smaller": f"{ref / np.mean([e['bytes'] for e in r]):.2f}",
                     "params": ms([e["params"] for e in r], "{:.0f}"),
                     "MACs": ms([e["macs"] for e in r], "{:.0f}"),
                     "accuracy": ms([e["accuracy"] for e in r], "{:.4f}"),
                     "latency_ms": ms([e["latency_ms"] for e in r], "{:.4f}")})
    print(f"## DeepSense (zoo `deepsense`, C=1, T=8 x tau=5) on MNIST-1D: baseline {epochs} "
          f"epochs (Adam 3e-3, cosine), fine-tuning {ft} epochs per technique; {len(seeds)} "
          f"seed(s) (data carving, init, fine-tuning); {wall:.0f} s wall\n")
    print(table(rows, ["model", "bytes", "x_smaller", "params", "MACs", "accuracy",
                       "latency_ms"]) + "\n")
    print(f"Machine: {machine()}; load average {os.getloadavg()[0]:.1f} at the end; mean ± std "
          f"over seeds; every number measured on the model reloaded from its .dnz")


if __name__ == "__main__":
    main()
