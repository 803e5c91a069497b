"""Issue 3: sensitivity analysis ([38]) and evolutionary ratio search (EvoNAS [83], knee-guided
EA [32]) on a trained VGG-BN, each followed by the same fine-tune, beside uniform ratios.

    .venv/bin/python -m benchmarks.prune_analysis            # cached baseline of prune_channel.py

Uses the 5-epoch VGG-BN baseline that ``prune_channel.py --train 20000 --epochs 5`` cached
(trains it if absent). Steps, all on the *validation* split (test only for the final rows):
1. ``sensitivity``: every channel group pruned alone at 0.25 / 0.5 / 0.75 (criterion l1, no
   fine-tune); curves written to ``runs/prune_analysis/sensitivity.{csv,png}``.
2. Per-layer ratios from the curves: ``ratios_for(max_drop)`` for a few drops.
3. ``search_ratios``: NSGA-II over per-group keep ratios (accuracy vs MACs, no fine-tune),
   its Pareto front and knee point; written to ``runs/prune_analysis/search_ft<N>.json``.
   With ``--search-ft-batches N`` each candidate is fine-tuned on N training batches before it
   is scored (pruned-only accuracy is a poor proxy at these ratios: see results/prune.md).
4. Every plan (uniform 0.5, uniform 0.3, sensitivity ratios, NSGA-II knee and the front's most
   accurate point at <= the uniform-0.5 MACs) fine-tuned the same ``--ft`` epochs, seed 0;
   test accuracy and MACs side by side.
"""
from __future__ import annotations

import argparse
import os
import warnings

import torch

from benchmarks.prune_channel import cached_baseline
from benchmarks.prune_common import Timer, accuracy, fashion, machine, macs, params, table
from dnnzip.io import atomic_json
from dnnzip.prune.search import search_ratios
from dnnzip.prune.sensitivity import sensitivity
from dnnzip.registry import Context, apply

OUT = os.path.join("runs", "prune_analysis")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=5, help="baseline epochs (cached)")
    ap.add_argument("--ft", type=int, default=3, help="fine-tune epochs, every plan")
    ap.add_argument("--trials", type=int, default=40, help="NSGA-II trials")
    ap.add_argument("--val-batches", type=int, default=8, help="val batches per evaluation")
    ap.add_argument("--search-ft-batches", type=int, default=0,
                    help="NSGA-II: fine-tune each candidate on this many training batches "
                         "(1 epoch capped) before scoring it; 0 = score it straight after pruning")
    ap.add_argument("--cache", default=os.path.join("runs", "prune_channel"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*[Uu]nwrapped parameters.*")
    os.makedirs(OUT, exist_ok=True)
    data = fashion(args.train)
    base, _ = cached_baseline("vgg_bn", data, args.epochs, 1e-3, args.cache, args.train)
    x1 = data.example_input(1)
    ctx = Context(data=data, example_input=x1, epochs=args.ft, lr=1e-3, batch_size=128, seed=0)
    nofit = Context(data=data, example_input=x1, epochs=0, lr=1e-3, batch_size=128, seed=0)

    with Timer() as t_sens:
        sens = sensitivity(base, nofit, kind="channel", ratios=(0.25, 0.5, 0.75),
                           criterion="l1", max_batches=args.val_batches)
    sens.to_csv(os.path.join(OUT, "sensitivity.csv"))
    sens.plot(os.path.join(OUT, "sensitivity.png"), title="VGG-BN channel sensitivity (val)")
    print(f"## Sensitivity, VGG-BN ({t_sens.s:.0f} s); val accuracy of each group pruned alone "
          f"(baseline {100 * sens.baseline:.2f} %)\n")
    print(table([{"group": g, **{f"ratio {r:g}": 100 * a for r, a in zip(sens.ratios, accs)}}
                 for g, accs in sens.curves.items()],
                ["group"] + [f"ratio {r:g}" for r in sens.ratios]) + "\n", flush=True)

    with Timer() as t_search:
        sctx = Context(data=data, example_input=x1, epochs=0, lr=1e-3, batch_size=128, seed=0,
                       max_batches=args.search_ft_batches or None)
        res = search_ratios(base, sctx, n_trials=args.trials, keep_range=(0.2, 1.0),
                            criterion="l1", max_batches=args.val_batches, population=10, seed=0,
                            finetune_epochs=1 if args.search_ft_batches else 0)
    atomic_json(os.path.join(OUT, f"search_ft{args.search_ft_batches}.json"), res.to_dict())
    how = (f"each candidate fine-tuned on {args.search_ft_batches} batches"
           if args.search_ft_batches else "no fine-tune")
    print(f"## NSGA-II ({args.trials} trials, {t_search.s:.0f} s): Pareto front (val, {how})\n")
    print(table([{"MACs": p["macs"], "val acc %": 100 * p["accuracy"],
                  "knee": "<- knee" if p is res.knee else ""} for p in res.front],
                ["MACs", "val acc %", "knee"]) + "\n", flush=True)

    uniform = apply("prune.channel", base, {"criterion": "l1", "ratio": 0.5, "finetune": False},
                    nofit)
    budget = macs(uniform, x1)
    at_budget = [p for p in res.front if p["macs"] <= budget]
    plans = {"uniform 0.5": {"ratio": 0.5}, "uniform 0.3": {"ratio": 0.3}}
    for drop in (0.01, 0.03):
        plans[f"sensitivity, max drop {100 * drop:g} pt"] = {
            "ratio": 0.0, "layer_ratios": sens.ratios_for(drop)}
    plans["NSGA-II knee"] = {"ratio": 0.0, "layer_ratios": res.layer_ratios()}
    if at_budget:
        best = max(at_budget, key=lambda p: p["accuracy"])
        plans["NSGA-II best at <= uniform-0.5 MACs"] = {
            "ratio": 0.0, "layer_ratios": res.layer_ratios(best)}
    rows = [{"plan": "dense baseline", "test acc %": 100 * accuracy(base, data),
             "MACs": macs(base, x1), "params": params(base), "time s": 0.0}]
    for label, cfg in plans.items():
        with Timer() as t:
            m = apply("prune.channel", base, {"criterion": "l1", **cfg}, ctx)
        rows.append({"plan": label, "test acc %": 100 * accuracy(m, data), "MACs": macs(m, x1),
                     "params": params(m), "time s": t.s})
        print(f"  {label}: {rows[-1]['test acc %']:.2f} %, {rows[-1]['MACs']} MACs", flush=True)
    print(f"\n## Plans, each fine-tuned {args.ft} epochs (l1, seed 0), test split "
          f"({len(data.test)} images)\n\nMachine: {machine()}\n")
    print(table(rows, ["plan", "test acc %", "MACs", "params", "time s"]))


if __name__ == "__main__":
    main()
