"""Claim: with its defaults (Adam 1e-3, batch 128, cosine, 15 epochs, no augmentation)
``dnnzip.train.fit`` reaches >= 90 % test accuracy with lenet5 and >= 88.5 % with lenet300 on
Fashion-MNIST on a 2-core CPU.

    .venv/bin/python benchmarks/train_fashion.py --threads 2
    .venv/bin/python benchmarks/train_fashion.py --quick        # 2 epochs on 6k samples, smoke test
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from dnnzip import zoo
from dnnzip.data import load_data
from dnnzip.train import TrainSettings, evaluate, fit

TARGETS = {"lenet5": 0.90, "lenet300": 0.885}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    ap.add_argument("--epochs", type=int, default=TrainSettings().epochs)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="2 epochs on a 6,000-sample subset")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--checkpoint-dir", help="resumable per-model checkpoints (e.g. runs/bench)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_data("fashion-mnist", seed=args.seed, limit=6000 if args.quick else None)
    epochs = 2 if args.quick else args.epochs
    rows = []
    for name in args.models:
        torch.manual_seed(args.seed)
        model = zoo.build(name)
        settings = TrainSettings(epochs=epochs, seed=args.seed, progress=False,
                                 threads=args.threads)
        t0 = time.perf_counter()
        ck = f"{args.checkpoint_dir}/{name}.ckpt" if args.checkpoint_dir else None
        res = fit(model, data, settings, checkpoint=ck)
        seconds = time.perf_counter() - t0
        acc = evaluate(model, data)
        rows.append({"model": name, "epochs_run": len(res.history), "best_epoch": res.best_epoch,
                     "val": res.best_val_score, "test": acc, "seconds": seconds,
                     "target": TARGETS[name], "met": acc >= TARGETS[name]})
        for h in res.history:
            print(f"  {name} epoch {h.epoch:2d}  loss {h.train_loss:.4f}  val {h.val_score:.4f}"
                  f"  {h.seconds:.1f}s", flush=True)
        print(f"{name}: test {acc:.4f} (target {TARGETS[name]:.3f}, "
              f"{'met' if acc >= TARGETS[name] else 'NOT met'}), best epoch {res.best_epoch}, "
              f"{seconds:.0f}s", flush=True)
    env = {"python": platform.python_version(), "torch": torch.__version__,
           "threads": args.threads, "cpu": platform.processor() or platform.machine(),
           "quick": args.quick, "data": data.describe()["sizes"]}
    print(json.dumps(env))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"env": env, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
