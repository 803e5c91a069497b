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
import dataclasses
import os
import warnings

import torch

from benchmarks.prune_channel import cached_baseline, latencies
from benchmarks.prune_common import (Timer, accuracy, fashion, low_p10, machine, macs,
                                     median_p50, params, table)
from dnnzip.recipe import finetune_step
from dnnzip.registry import Context, apply


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=20000, help="training pool; 0 = all")
    ap.add_argument("--epochs", type=int, default=5, help="baseline epochs (cached)")
    ap.add_argument("--ft", type=int, default=3, help="fine-tune epochs, every method")
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cache", default=os.path.join("runs", "prune_channel"))
    ap.add_argument("--ft-seed", type=int, default=0, help="seed of every plan's fine-tune")
    ap.add_argument("--plans", default=None,
                    help="comma-separated plan labels to run (default: all); see PLANS")
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*[Uu]nwrapped parameters.*")
    limit = args.train or None  # 0: all of Fashion-MNIST (54k train / 6k val / 10k test)
    data = fashion(limit)
    base, _ = cached_baseline("resnet", data, args.epochs, 1e-3, args.cache, limit)
    x1, x64 = data.example_input(1), torch.stack([data.test[i][0] for i in range(64)])
    seed = args.ft_seed
    ctx = Context(data=data, example_input=x1, epochs=args.ft, lr=1e-3, batch_size=128, seed=seed)
    nofit = Context(data=data, example_input=x1, epochs=0, lr=1e-3, batch_size=128, seed=seed)
    kd_ctx = dataclasses.replace(ctx, teacher=base)
    def depth_then_channel(layer_ratio, channel, run_ctx=ctx):
        """``prune.layer`` (no fine-tune), then ``prune.channel`` with ``channel`` options."""
        shallower = apply("prune.layer", base, {"ratio": layer_ratio, "finetune": False}, nofit)
        return apply("prune.channel", shallower, channel, run_ctx)

    plans = {
        "channel l1 0.5": lambda: apply("prune.channel", base, {"criterion": "l1", "ratio": 0.5},
                                        ctx),
        "layer 0.5": lambda: apply("prune.layer", base, {"ratio": 0.5}, ctx),
        "layer 0.5 + channel l1 0.3": lambda: depth_then_channel(
            0.5, {"criterion": "l1", "ratio": 0.3}),
        "channel bn_scale 0.5": lambda: apply(
            "prune.channel", base, {"criterion": "bn_scale", "ratio": 0.5}, ctx),
        "layer 0.25 + channel bn_scale 0.5": lambda: depth_then_channel(
            0.25, {"criterion": "bn_scale", "ratio": 0.5}),
        "layer 0.25 + channel bn_scale 0.4": lambda: depth_then_channel(
            0.25, {"criterion": "bn_scale", "ratio": 0.4}),
        "layer 0.25 + channel bn_scale 0.4 round_to 8": lambda: depth_then_channel(
            0.25, {"criterion": "bn_scale", "ratio": 0.4, "round_to": 8}),
        # the same shapes, fine-tuned with Hinton KD from the dense baseline instead of CE
        # (recipe step ``finetune`` with distill=true; T=4, alpha=0.5 as chosen in issue 6)
        "layer 0.25 + channel bn_scale 0.5 + KD fine-tune": lambda: finetune_step(
            depth_then_channel(0.25, {"criterion": "bn_scale", "ratio": 0.5, "finetune": False},
                               nofit),
            {"epochs": args.ft, "distill": True, "temperature": 4.0, "alpha": 0.5}, kd_ctx),
    }
    if args.plans:
        wanted = args.plans.split(",")
        unknown = [p for p in wanted if p not in plans]
        if unknown:
            raise SystemExit(f"unknown plan(s) {unknown}; choose from {list(plans)}")
        plans = {k: v for k, v in plans.items() if k in wanted}
    base_acc = accuracy(base, data)
    models, rows = {"dense baseline": base}, [{"method": "dense baseline", "acc %": 100 * base_acc,
                                               "drop pt": 0.0, "time s": 0.0}]
    # trained plans are cached (benchmark-local pickles of this script's own output), so a
    # rerun with the same settings only times them again
    mdir = os.path.join(args.cache, f"resnet_depth_n{limit or 'all'}_e{args.epochs}_ft{args.ft}"
                        + (f"_s{seed}" if seed else ""))
    os.makedirs(mdir, exist_ok=True)
    for label, make in plans.items():
        path = os.path.join(mdir, "".join(c if c.isalnum() else "_" for c in label) + ".pt")
        if os.path.exists(path):
            m, secs = torch.load(path, weights_only=False)
        else:
            with Timer() as t:
                m = make().eval()
            secs = t.s
            torch.save((m, secs), path + ".tmp")
            os.replace(path + ".tmp", path)
        m.eval()
        a = accuracy(m, data)
        models[label] = m
        rows.append({"method": label, "acc %": 100 * a, "drop pt": 100 * (base_acc - a),
                     "time s": secs})
        print(f"  {label}: acc {100 * a:.2f} % ({secs:.0f} s)", flush=True)
    lat = latencies(models, x1, x64, args.repeats, args.rounds)
    cols = ["method", "acc %", "drop pt", "MACs", "params", "torch b1 ms", "x b1", "torch b64 ms",
            "x b64", "ORT b1 ms", "x ORT", "time s"]
    print(f"## ResNet depth + channel pruning, Fashion-MNIST ({len(data.train)} train / "
          f"{len(data.test)} test), baseline {args.epochs} epochs, fine-tune {args.ft} epochs "
          f"per method (seed {seed})\n\nMachine: {machine()}\n")
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
