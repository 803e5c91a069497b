"""Issue 8 benchmarks 1-2: auto (all families) vs each single family under the same budget and
the same number of trials, and TPE vs random search (trials to first feasible point).

    .venv/bin/python benchmarks/auto_vs_single.py --trials 12 --max-batches 100 \
        --max-size 64KB --min-accuracy 0.88 --seeds 0 1

Writes benchmarks/results/auto.md. Every number is a measured trial: a written .dnz, reloaded,
latency on ONNX Runtime, accuracy on the validation split.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import torch

from dnnzip.budget import Budget
from dnnzip.data import load_data
from dnnzip.demo import trained_lenet5
from dnnzip.errors import BudgetError
from dnnzip.search import AutoConfig, Search


def run(families, sampler, seed, args, data, model, budget, warm=True) -> dict:
    out = Path(args.workdir) / f"{sampler}-{'+'.join(families)}-s{seed}{'' if warm else '-cold'}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = AutoConfig(trials=args.trials, sampler=sampler, seed=seed, families=families,
                     finetune_epochs=1, final_epochs=0, finalists=1,
                     max_batches=args.max_batches, latency_repeats=30, warm_start=warm)
    t0 = time.perf_counter()
    s = Search(model, data, budget, out_dir=out, config=cfg)
    s.run_trials()
    trials = sorted(s.completed(), key=lambda t: t.number)
    first = next((i + 1 for i, t in enumerate(trials) if t.user_attrs.get("feasible")), None)
    feas = [t for t in trials if t.user_attrs.get("feasible")]
    best = max(feas, key=lambda t: t.user_attrs["score"]) if feas else None
    return {"families": "+".join(families), "sampler": sampler + ("" if warm else " (cold)"),
            "seed": seed,
            "first_feasible": first, "feasible": bool(best), "n_feasible": len(feas),
            "n_trials": len(trials),
            "best_bytes": best.user_attrs["measurement"]["bytes"] if best else None,
            "best_acc": best.user_attrs["measurement"]["accuracy"] if best else None,
            "best_score": best.user_attrs["score"] if best else None,
            "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--max-batches", type=int, default=100)
    ap.add_argument("--max-size", default="64KB")
    ap.add_argument("--min-accuracy", default="0.88")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--workdir", default="runs/bench-auto")
    ap.add_argument("--data", default="fashion-mnist", choices=["fashion-mnist", "digits"])
    ap.add_argument("--out", default="benchmarks/results/auto.md")
    ap.add_argument("--cold-only", action="store_true",
                    help="only TPE vs random without the warm-start recipes (search efficiency)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_data(args.data, seed=0)
    if args.data == "fashion-mnist":
        model, model_desc = trained_lenet5(data, epochs=12, progress=False), "LeNet-5 (12 epochs)"
    else:  # a cheap setting for the search-efficiency comparison (many trials, many seeds)
        from dnnzip import zoo
        from dnnzip.load import kwargs_for_data
        from dnnzip.train import TrainSettings, fit
        model = zoo.build("lenet300", **kwargs_for_data("lenet300", data))
        fit(model, data, TrainSettings(epochs=30, seed=0, progress=False))
        model, model_desc = model.eval(), "LeNet-300-100 (30 epochs)"
    budget = Budget.parse(max_size=args.max_size, min_accuracy=args.min_accuracy)
    allf = ("connection", "channel", "share", "int8", "lowbit", "distill")
    rows = []
    for seed in args.seeds:
        if args.cold_only:
            rows.append(run(allf, "tpe", seed, args, data, model, budget, warm=False))
            rows.append(run(allf, "random", seed, args, data, model, budget, warm=False))
            continue
        rows.append(run(allf, "tpe", seed, args, data, model, budget))
        rows.append(run(allf, "random", seed, args, data, model, budget))
        for fam in ("connection", "channel", "share", "int8", "lowbit"):
            rows.append(run((fam,), "tpe", seed, args, data, model, budget))
    lines = ["# auto vs single families (issue 8)", "",
             f"Command: `.venv/bin/python benchmarks/auto_vs_single.py --trials {args.trials} "
             f"--max-batches {args.max_batches} --max-size {args.max_size} --min-accuracy "
             f"{args.min_accuracy} --seeds {' '.join(map(str, args.seeds))}"
             f"{' --cold-only' if args.cold_only else ''} --data {args.data}`", "",
             f"Machine: 2-core CPU, 1 thread. {model_desc} on {args.data}. Budget: "
             f"{budget.describe()}. Same trial count for every row.", "",
             "| families | sampler | seed | feasible | trials to first feasible | feasible trials | "
             "best bytes | best val acc | Eq. 25 score | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        acc = "-" if r["best_acc"] is None else f"{r['best_acc']:.4f}"
        score = "-" if r["best_score"] is None else f"{r['best_score']:.3f}"
        lines.append(f"| {r['families']} | {r['sampler']} | {r['seed']} | {r['feasible']} | "
                     f"{r['first_feasible'] or '-'} | {r['n_feasible']}/{r['n_trials']} | "
                     f"{r['best_bytes'] or '-'} | {acc} | "
                     f"{score} | {r['seconds']:.0f} |")
    if args.cold_only:  # the search-efficiency summary over seeds
        lines += ["", "| sampler | seeds feasible | median trials to first feasible (infeasible "
                  f"seeds count as {args.trials + 1}) | mean feasible trials | mean best score |",
                  "|---|---|---|---|---|"]
        for sampler in ("tpe (cold)", "random (cold)"):
            rs = [r for r in rows if r["sampler"] == sampler]
            firsts = [r["first_feasible"] or args.trials + 1 for r in rs]
            scores = [r["best_score"] for r in rs if r["best_score"] is not None]
            lines.append(f"| {sampler} | {sum(r['feasible'] for r in rs)}/{len(rs)} | "
                         f"{statistics.median(firsts):g} | "
                         f"{statistics.mean(r['n_feasible'] for r in rs):.1f} | "
                         f"{statistics.mean(scores) if scores else float('nan'):.3f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    Path(args.workdir, "rows.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
