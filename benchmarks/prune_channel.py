"""Claim (issue 3, benchmark 2): channel pruning of the small VGG-BN and ResNet on Fashion-MNIST
gives >= 2x measured latency speed-up (torch eager, 1 thread, batch 1 and 64; ONNX Runtime) at
<= 1 pt accuracy loss; every criterion at equal MACs reduction and the same fine-tuning budget,
beside Torch-Pruning's own MagnitudePruner run in the same script.

    .venv/bin/python -m benchmarks.prune_channel            # 60k pool (54k train), 8 + 2 epochs
    .venv/bin/python -m benchmarks.prune_channel --quick    # 8k pool subset, 3 + 1 epochs
    .venv/bin/python -m benchmarks.prune_channel --train 20000 --epochs 5 --ft 3 \\
        --criteria thinet,reconstruction                    # larger run, selected criteria

The trained baseline is cached under ``runs/prune_channel/`` (keyed by model, data size, epochs,
lr and seed) and reused across criteria and runs; so is every pruned, fine-tuned model (a run
with the same settings skips what is saved; ``--latency-only`` just times them again).
Latencies are measured after all methods of a model are trained, interleaved: ``--rounds``
rounds, each timing every model (``--repeats`` calls), so load drift on a shared machine hits
the baseline and the pruned models alike; the table gives the median over rounds of each
round's p50, a second table the low end (lowest of the rounds' 10th percentiles).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import warnings

import torch
import torch_pruning as tp

from benchmarks.prune_common import (Timer, accuracy, fashion, interleaved_times, low_p10,
                                     machine, macs, median_p50, params, table, trained)
from dnnzip.registry import Context, apply
from dnnzip.train import TrainSettings, fit

CRITERIA = ["l1", "l2", "bn_scale", "taylor", "thinet", "reconstruction"]
PEER = "peer: Torch-Pruning MagnitudePruner (L1)"


def tp_magnitude(base, x, ratio, data, ft, lr, seed=0):
    model = copy.deepcopy(base)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    pruner = tp.pruner.MagnitudePruner(model, x, importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=ratio, ignored_layers=[last])
    pruner.step()
    if ft:
        fit(model, data, TrainSettings(epochs=ft, lr=lr, batch_size=128, seed=seed))
    return model.eval()


def cached_baseline(name, data, epochs, lr, cache, limit):
    """Train once per (model, data size, epochs, lr, seed 0); later runs load the weights."""
    path = os.path.join(cache, f"{name}_n{limit or 'all'}_e{epochs}_lr{lr:g}_s0.pt")
    if os.path.exists(path):
        from dnnzip import zoo
        model = zoo.build(name)
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval(), 0.0
    with Timer() as t:
        model = trained(name, data, epochs=epochs, lr=lr)
    os.makedirs(cache, exist_ok=True)
    torch.save(model.state_dict(), path + ".tmp")
    os.replace(path + ".tmp", path)
    return model, t.s


def latencies(models: dict, x1, x64, repeats: int, rounds: int) -> dict:
    """name -> {b1, b64, ort} -> per-round lists of call times (ms), interleaved rounds: each
    round times every model at batch 1, then every model at batch 64, then every model on ONNX
    Runtime, starting one case later each round (``rotate``)."""
    kinds = {"b1": (x1, "torch", repeats), "b64": (x64, "torch", max(5, repeats // 5)),
             "ort": (x1, "onnxruntime", repeats)}
    got = interleaved_times({(n, k): (m, x, rt, rep) for k, (x, rt, rep) in kinds.items()
                             for n, m in models.items()}, repeats, rounds, rotate=True)
    return {n: {k: got[(n, k)] for k in kinds} for n in models}


def _slug(method: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in method.lower()).strip("_")


def run(name, data, ep, ft, ratio, lr, repeats, rounds, criteria, cache, limit, log,
        latency_only=False, seed=0):
    """Train (or load) every method of one model, then time them all; returns (median rows,
    quietest-round rows)."""
    base, base_t = cached_baseline(name, data, ep, lr, cache, limit)
    x1, x64 = data.example_input(1), torch.stack([data.test[i][0] for i in range(64)])
    mdir = os.path.join(cache, f"{name}_n{limit or 'all'}_e{ep}_ft{ft}_r{ratio:g}_lr{lr:g}"
                        + (f"_s{seed}" if seed else ""))
    os.makedirs(mdir, exist_ok=True)
    rows_path = os.path.join(mdir, "rows.json")
    saved = json.load(open(rows_path)) if os.path.exists(rows_path) else {}
    base_acc = accuracy(base, data)
    models = {"dense baseline": base}
    rows = [{"model": name, "method": "dense baseline", "acc %": 100 * base_acc, "drop pt": 0.0,
             "time s": base_t}]
    for method in [f"dnnzip {c}" for c in criteria] + [PEER]:
        path = os.path.join(mdir, _slug(method) + ".pt")
        if method in saved and os.path.exists(path):  # trained by an earlier run: reuse
            models[method] = torch.load(path, weights_only=False).eval()
            rows.append(saved[method])
            continue
        if latency_only:
            print(f"  {name} {method}: not trained yet ({path}); skipped", flush=True)
            continue
        with Timer() as t:
            if method == PEER:
                out = tp_magnitude(base, x1, ratio, data, ft, lr, seed)
            else:
                ctx = Context(data=data, example_input=x1, epochs=ft, lr=lr, batch_size=128,
                              seed=seed)
                out = apply("prune.channel", base, {"criterion": method.split()[1],
                                                    "ratio": ratio}, ctx)
        a = accuracy(out, data)
        models[method] = out
        row = {"model": name, "method": method, "acc %": 100 * a,
               "drop pt": 100 * (base_acc - a), "time s": t.s}
        rows.append(row)
        torch.save(out, path + ".tmp")
        os.replace(path + ".tmp", path)
        saved[method] = row
        with open(rows_path + ".tmp", "w") as f:
            json.dump(saved, f, indent=1)
        os.replace(rows_path + ".tmp", rows_path)
        print(f"  {name} {method}: acc {100 * a:.2f} % ({t.s:.0f} s)", flush=True)
    lat = latencies(models, x1, x64, repeats, rounds)
    out_rows = {}
    for stat, f in (("median", median_p50), ("low", low_p10)):
        b = {k: f(v) for k, v in lat["dense baseline"].items()}
        out_rows[stat] = []
        for r in rows:
            m = models[r["method"]]
            L = {k: f(v) for k, v in lat[r["method"]].items()}
            row = dict(r, **{"MACs": macs(m, x1), "params": params(m), "torch b1 ms": L["b1"],
                             "torch b64 ms": L["b64"], "ORT b1 ms": L["ort"]})
            if r["method"] != "dense baseline":
                row.update({"x b1": b["b1"] / L["b1"], "x b64": b["b64"] / L["b64"],
                            "x ORT": b["ort"] / L["ort"]})
            out_rows[stat].append(row)
            if log:
                with open(log, "a") as fh:
                    fh.write(json.dumps(dict(row, latency=stat)) + "\n")
    return out_rows["median"], out_rows["low"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="8k pool, 3 + 1 epochs, 30 repeats")
    ap.add_argument("--ratio", type=float, default=0.5, help="channels removed per group")
    ap.add_argument("--models", default="vgg_bn,resnet")
    ap.add_argument("--train", type=int, default=None,
                    help="cap on the training pool (10 %% is held out for validation); the test "
                         "split is capped at the same number (Fashion-MNIST has 10k)")
    ap.add_argument("--epochs", type=int, default=None, help="baseline training epochs")
    ap.add_argument("--ft", type=int, default=None, help="fine-tune epochs (every method)")
    ap.add_argument("--criteria", default=",".join(CRITERIA))
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved latency rounds")
    ap.add_argument("--cache", default=os.path.join("runs", "prune_channel"))
    ap.add_argument("--log", default=None, help="append every row as JSON to this file")
    ap.add_argument("--ft-seed", type=int, default=0,
                    help="seed of every method's fine-tune (same baseline; data order, dropout)")
    ap.add_argument("--latency-only", action="store_true",
                    help="only time the models an earlier run with the same settings saved")
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*[Uu]nwrapped parameters.*")
    limit, ep, ft, repeats = (8000, 3, 1, 30) if args.quick else (None, 8, 2, 100)
    limit = args.train if args.train is not None else limit
    ep = args.epochs if args.epochs is not None else ep
    ft = args.ft if args.ft is not None else ft
    repeats = args.repeats if args.repeats is not None else repeats
    criteria = [c for c in args.criteria.split(",") if c]
    for c in criteria:
        if c not in CRITERIA:
            raise SystemExit(f"unknown criterion {c!r}; choose from {', '.join(CRITERIA)}")
    data = fashion(limit)
    cols = ["model", "method", "acc %", "drop pt", "MACs", "params", "torch b1 ms", "x b1",
            "torch b64 ms", "x b64", "ORT b1 ms", "x ORT", "time s"]
    print(f"## prune.channel at ratio {args.ratio} per group (equal MACs for every method), "
          f"Fashion-MNIST ({len(data.train)} train / {len(data.test)} test), baseline {ep} "
          f"epochs, fine-tune {ft} epoch(s) for every method (seed {args.ft_seed}); latency: "
          f"median of {args.rounds} interleaved rounds of p50 over {repeats} calls (batch 64: {max(5, repeats // 5)})"
          f"\n\nMachine: {machine()}\n", flush=True)
    for name in args.models.split(","):
        rows, quiet = run(name, data, ep, ft, args.ratio, 1e-3, repeats, args.rounds, criteria,
                          args.cache, limit, args.log, args.latency_only, args.ft_seed)
        print(table(rows, cols) + "\n", flush=True)
        print(f"Same models and calls, low-end latency (lowest of the {args.rounds} rounds' 10th "
              "percentiles; less disturbed by other jobs):\n", flush=True)
        print(table(quiet, [c for c in cols if c not in ("acc %", "drop pt", "time s")]) + "\n",
              flush=True)


if __name__ == "__main__":
    main()
