"""Issue 3, benchmark 2 for the small ResNet: at batch 1 its latency is per-op overhead, so
channel pruning alone (fewer MACs, same number of ops) gives only 1.1-1.9x (results/prune.md).
This script adds depth: ``prune.layer`` removes whole residual blocks (fewer ops), alone and
followed by ``prune.channel``, on the same cached baseline and data as ``prune_channel.py``
(run that first), with the same fine-tuning budget per method, timed in interleaved rounds
beside the baseline and the channel-only model.

    .venv/bin/python -m benchmarks.prune_resnet_depth --train 20000 --epochs 5 --ft 3
"""
from __future__ import annotations

import argparse
import os
import warnings

import torch

from benchmarks.prune_channel import cached_baseline, latencies
from benchmarks.prune_common import (Timer, accuracy, fashion, low_p10, machine, macs,
                                     median_p50, params, table)
from dnnzip.registry import Context, apply


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=5, help="baseline epochs (cached)")
    ap.add_argument("--ft", type=int, default=3, help="fine-tune epochs, every method")
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cache", default=os.path.join("runs", "prune_channel"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*[Uu]nwrapped parameters.*")
    data = fashion(args.train)
    base, _ = cached_baseline("resnet", data, args.epochs, 1e-3, args.cache, args.train)
    x1, x64 = data.example_input(1), torch.stack([data.test[i][0] for i in range(64)])
    ctx = Context(data=data, example_input=x1, epochs=args.ft, lr=1e-3, batch_size=128, seed=0)
    nofit = Context(data=data, example_input=x1, epochs=0, lr=1e-3, batch_size=128, seed=0)
    plans = {
        "channel l1 0.5": lambda: apply("prune.channel", base, {"criterion": "l1", "ratio": 0.5},
                                        ctx),
        "layer 0.5": lambda: apply("prune.layer", base, {"ratio": 0.5}, ctx),
        "layer 0.5 + channel l1 0.3": lambda: apply(
            "prune.channel", apply("prune.layer", base, {"ratio": 0.5, "finetune": False}, nofit),
            {"criterion": "l1", "ratio": 0.3}, ctx),
    }
    base_acc = accuracy(base, data)
    models, rows = {"dense baseline": base}, [{"method": "dense baseline", "acc %": 100 * base_acc,
                                               "drop pt": 0.0, "time s": 0.0}]
    for label, make in plans.items():
        with Timer() as t:
            m = make().eval()
        a = accuracy(m, data)
        models[label] = m
        rows.append({"method": label, "acc %": 100 * a, "drop pt": 100 * (base_acc - a),
                     "time s": t.s})
        print(f"  {label}: acc {100 * a:.2f} % ({t.s:.0f} s)", flush=True)
    lat = latencies(models, x1, x64, args.repeats, args.rounds)
    cols = ["method", "acc %", "drop pt", "MACs", "params", "torch b1 ms", "x b1", "torch b64 ms",
            "x b64", "ORT b1 ms", "x ORT", "time s"]
    print(f"## ResNet depth + channel pruning, Fashion-MNIST ({len(data.train)} train / "
          f"{len(data.test)} test), baseline {args.epochs} epochs, fine-tune {args.ft} epochs "
          f"per method\n\nMachine: {machine()}\n")
    for stat, f in (("median of rounds' p50", median_p50), ("low-end p10", low_p10)):
        b = {k: f(v) for k, v in lat["dense baseline"].items()}
        out = []
        for r in rows:
            L = {k: f(v) for k, v in lat[r["method"]].items()}
            row = dict(r, **{"MACs": macs(models[r["method"]], x1),
                             "params": params(models[r["method"]]), "torch b1 ms": L["b1"],
                             "torch b64 ms": L["b64"], "ORT b1 ms": L["ort"]})
            if r["method"] != "dense baseline":
                row.update({"x b1": b["b1"] / L["b1"], "x b64": b["b64"] / L["b64"],
                            "x ORT": b["ort"] / L["ort"]})
            out.append(row)
        print(f"latency: {stat}\n\n" + table(out, cols) + "\n", flush=True)


if __name__ == "__main__":
    main()
