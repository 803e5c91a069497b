"""Multi-task weight sharing on Fashion-MNIST: 10 classes and a 5-superclass grouping.

Two LeNet-300-100 models (one per labelling) are (a) zipped with MTZ ([43], ``mtz_merge``) with
1 or 2 shared layers + a short joint fine-tune (survey Eq. 14), (b) replaced by a frozen shared
backbone + a branch for task 2 ([50], ``branch_train``), (c) replaced by one model with shared
hidden layers trained jointly from scratch ([52], ``shared_from_scratch``). Reported: bytes of the
``.dnz`` (vs the two separate files) and test accuracy of each task.

    .venv/bin/python benchmarks/share_multitask.py --quick
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import torch
from torch.utils.data import Dataset

from dnnzip import zoo
from dnnzip.artifact import pack
from dnnzip.data import load_data
from dnnzip.share.branch import branch_train
from dnnzip.share.multitask import evaluate_tasks, mtz_merge, shared_from_scratch, train_multitask
from dnnzip.train import TrainSettings, evaluate, fit

# Fashion-MNIST: 0 T-shirt 1 Trouser 2 Pullover 3 Dress 4 Coat 5 Sandal 6 Shirt 7 Sneaker 8 Bag
# 9 Ankle boot -> tops (0, 2, 6), bottoms/dresses (1, 3), outerwear (4), footwear (5, 7, 9), bag (8)
SUPER = [0, 1, 0, 1, 2, 3, 0, 3, 4, 3]


class Relabel(Dataset):
    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return x, torch.as_tensor(SUPER[int(y)], dtype=torch.int64)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="20k training images, 3 epochs")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--joint-epochs", type=int, default=1)
    args = p.parse_args()
    if args.quick:
        args.limit, args.epochs = args.limit or 20000, min(args.epochs, 3)
    torch.set_num_threads(1)
    ten = load_data("fashion-mnist", seed=0, limit=args.limit)
    five = dataclasses.replace(ten, name="fashion-mnist-5", num_classes=5,
                               **{s: Relabel(getattr(ten, s)) for s in ("train", "val", "test",
                                                                          "calib")})
    tasks = [ten, five]
    settings = TrainSettings(epochs=args.epochs, batch_size=128, lr=1e-3, progress=False)
    models = []
    for seed, t in enumerate(tasks):
        torch.manual_seed(seed)
        m = zoo.build("lenet300")
        fit(m, t, settings)
        models.append(m.eval())
    tmp = Path(tempfile.mkdtemp())
    separate = sum(pack(m, tmp / f"m{i}.dnz") for i, m in enumerate(models))
    rows = [("two separate models", separate,
             [evaluate(models[0], ten.test), evaluate(models[1], five.test)])]
    x = ten.example_input(4)
    for depth in (1, 2):
        multi, _ = mtz_merge(*models, shared_layers=depth, example=x, data_a=ten.train,
                             data_b=five.train)
        rows.append((f"MTZ zip, {depth} shared, no fine-tune", pack(multi, tmp / "z.dnz"),
                     evaluate_tasks(multi, tasks)))
        train_multitask(multi, tasks, epochs=args.joint_epochs, lr=5e-4, batch_size=128)
        rows.append((f"MTZ zip, {depth} shared + {args.joint_epochs} ep joint",
                     pack(multi, tmp / "z.dnz"), evaluate_tasks(multi, tasks)))
    multi, _ = branch_train(models[0], tasks, split=2, settings=settings)
    rows.append(("frozen backbone (2 layers) + branch [50]", pack(multi, tmp / "b.dnz"),
                 evaluate_tasks(multi, tasks)))
    torch.manual_seed(0)
    multi = shared_from_scratch(models[0], tasks, shared_layers=2, example=x,
                                epochs=args.epochs, lr=1e-3, batch_size=128)
    rows.append(("joint training, 2 shared layers [52]", pack(multi, tmp / "j.dnz"),
                 evaluate_tasks(multi, tasks)))
    print(f"train {len(ten.train)} images, {args.epochs} epochs per model")
    print("| model | .dnz bytes | saved vs separate | 10-class acc | 5-superclass acc |")
    print("|---|---:|---:|---:|---:|")
    for label, nbytes, acc in rows:
        print(f"| {label} | {nbytes:,} | {1 - nbytes / separate:.0%} | {100 * acc[0]:.2f} | "
              f"{100 * acc[1]:.2f} |")


if __name__ == "__main__":
    main()
