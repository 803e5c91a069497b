"""Claim (DeepCache [76] / DeepMon [33]): on a continuous-sensing stream that repeats itself, an
inference cache answers part of the inputs from past results, saving latency; exact reuse is
lossless, similarity reuse hits more (near-duplicates) at a possible accuracy cost.

    .venv/bin/python benchmarks/misc_cache.py            # 4,000-input streams, 3 seeds
    .venv/bin/python benchmarks/misc_cache.py --quick    # 1,000-input streams, 1 seed

Stream: a pool of ``--pool`` Fashion-MNIST *test* images (random subset), each stream item
re-draws one of them with Zipf probabilities p_k ~ 1/k^s (rank k of a random permutation; s =
``--zipf``), then shows it unchanged (50 %), with Gaussian noise of 0.05 x its std (25 %:
sensor noise) or shifted by one pixel in a random direction (25 %: camera jitter; torch.roll,
the border of Fashion-MNIST is background). The model is LeNet-5 trained on 18,000 Fashion-MNIST
training images (6 epochs, cached in /tmp/dnnzip_bench by benchmarks/factor_common.py), batch 1.
For each mode the plain and the cached pass are interleaved, 3 rounds, median per round.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.factor_common import acc, data_for, machine, table, trained
from dnnzip.cache import evaluate_stream


def zipf_stream(test, n: int, *, pool: int, s: float, seed: int):
    """(stream, info): ``n`` (x, y) items; ``info`` gives the oracle repeat rates."""
    rng = np.random.default_rng(seed)
    ids = rng.choice(len(test), size=pool, replace=False)
    p = 1.0 / np.arange(1, pool + 1) ** s
    p /= p.sum()
    draws = ids[rng.choice(pool, size=n, p=p)]
    stream, seen, seen_exact, rep, rep_exact = [], set(), set(), 0, 0
    for i in draws:
        x, y = test[int(i)]
        u = rng.random()
        if u < 0.5:
            key = (int(i), "exact")
        elif u < 0.75:
            g = torch.from_numpy(rng.standard_normal(tuple(x.shape)).astype(np.float32))
            x = x + 0.05 * float(x.std()) * g
            key = None  # every noisy copy is a new tensor
        else:
            axis, step = int(rng.integers(1, 3)), int(rng.choice([-1, 1]))
            x = torch.roll(x, step, dims=axis)
            key = (int(i), axis, step)
        rep += int(i) in seen
        rep_exact += key is not None and key in seen_exact
        seen.add(int(i))
        if key is not None:
            seen_exact.add(key)
        stream.append((x, int(y)))
    return stream, {"source_repeat": rep / n, "exact_repeat": rep_exact / n,
                    "distinct_sources": len(seen)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--pool", type=int, default=1000)
    ap.add_argument("--zipf", type=float, default=1.0)
    ap.add_argument("--capacity", type=int, default=1024)
    args = ap.parse_args()
    torch.set_num_threads(1)
    n, seeds = (1000, [0]) if args.quick else (4000, [0, 1, 2])
    data = data_for("lenet5", False)
    t0 = time.perf_counter()
    model = trained("lenet5", data, epochs=6)
    base_acc = acc(model, data)
    modes = [("exact", {"mode": "exact"})]
    modes += [(f"similar t={t}", {"mode": "similar", "threshold": t, "size": 8})
              for t in (0.999, 0.99, 0.97)]
    per: dict[str, list[dict]] = {m: [] for m, _ in modes}
    infos = []
    for seed in seeds:
        stream, info = zipf_stream(data.test, n, pool=args.pool, s=args.zipf, seed=seed)
        infos.append(info)
        for name, opts in modes:
            per[name].append(evaluate_stream(model, stream, rounds=3, capacity=args.capacity,
                                             **opts))
    wall = time.perf_counter() - t0

    def ms(vals, fmt="{:.4f}"):
        v = np.asarray(vals, float)
        return (fmt + " ± " + fmt).format(v.mean(), v.std()) if len(v) > 1 else fmt.format(v[0])

    rows = []
    for name, _ in modes:
        r = per[name]
        rows.append({
            "mode": name, "hit_rate": ms([e["hit_rate"] for e in r], "{:.3f}"),
            "median_ms_plain": ms([e["latency_ms"] for e in r]),
            "median_ms_cached": ms([e["cached_latency_ms"] for e in r]),
            "hit_ms": ms([e["hit_latency_ms"] for e in r]),
            "miss_ms": ms([e["miss_latency_ms"] for e in r]),
            "mean_ms_plain": ms([e["latency_mean_ms"] for e in r]),
            "mean_ms_cached": ms([e["cached_latency_mean_ms"] for e in r]),
            "saved_total_s": ms([e["saved_total_ms"] / 1e3 for e in r], "{:.3f}"),
            "saved_pct": ms([100 * e["saved_total_ms"] / e["total_ms"] for e in r], "{:.1f}"),
            "acc_plain": ms([e["accuracy"] for e in r]),
            "acc_cached": ms([e["cached_accuracy"] for e in r]),
            "acc_change": ms([e["accuracy_change"] for e in r]),
            "agreement": ms([e["agreement"] for e in r]),
        })
    print(f"## dnnzip.cache on a Zipf stream: {n} inputs x {len(seeds)} seeds, pool "
          f"{args.pool} test images, s={args.zipf}, capacity {args.capacity}; LeNet-5 test "
          f"accuracy {base_acc:.4f} on {len(data.test)} images; {wall:.0f} s wall\n")
    print("Oracle repeat rates (mean over seeds): source image seen before "
          f"{np.mean([i['source_repeat'] for i in infos]):.3f}, identical tensor seen before "
          f"{np.mean([i['exact_repeat'] for i in infos]):.3f}; distinct sources "
          f"{np.mean([i['distinct_sources'] for i in infos]):.0f}\n")
    print(table(rows, ["mode", "hit_rate", "median_ms_plain", "median_ms_cached", "hit_ms",
                       "miss_ms", "mean_ms_plain", "mean_ms_cached", "saved_total_s", "saved_pct",
                       "acc_plain", "acc_cached", "acc_change", "agreement"]) + "\n")
    print(f"Machine: {machine()}; load average {os.getloadavg()[0]:.1f} at the end; mean ± std "
          f"over {len(seeds)} stream seed(s), each timing the median of 3 interleaved rounds")


if __name__ == "__main__":
    main()
