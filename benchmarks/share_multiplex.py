"""Neural multiplexing ([49], survey Eq. 11-12): LeNet-300-100 small, LeNet-5 big, Fashion-MNIST.

Trains (or loads the cached weights of ``benchmarks/share_deep_compression.py``) both models,
wraps them with ``share.multiplex`` (confidence router, and the learned router), and prints
accuracy vs share of inputs sent to the big model vs mean MACs per input
(``dnnzip.profile.count_macs``; small + router + share x big), on the test split.

    .venv/bin/python benchmarks/share_multiplex.py --quick
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from dnnzip import registry, zoo
from dnnzip.data import load_data
from dnnzip.registry import Context
from dnnzip.share.multiplex import multiplex_report
from dnnzip.train import TrainSettings, evaluate, fit


def trained(name: str, data, epochs: int, cache: Path) -> torch.nn.Module:
    model = zoo.build(name)
    path = cache / f"{name}_dense_e{epochs}_n{len(data.train)}.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path))
    else:
        torch.manual_seed(0)
        fit(model, data, TrainSettings(epochs=epochs, batch_size=128, lr=1e-3, progress=False))
        cache.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
    return model.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="20k training images, 4 epochs")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--cache", default="runs/share_dc")
    args = p.parse_args()
    if args.quick:
        args.limit, args.epochs = args.limit or 20000, min(args.epochs, 4)
    torch.set_num_threads(1)
    data = load_data("fashion-mnist", seed=0, limit=args.limit)
    small = trained("lenet300", data, args.epochs, Path(args.cache))
    big = trained("lenet5", data, args.epochs, Path(args.cache))
    print(f"small {evaluate(small, data.test):.4f}  big {evaluate(big, data.test):.4f}")
    ctx = Context(data=data, teacher=big, epochs=1, batch_size=128, lr=3e-3, seed=0,
                  progress=False)
    for mode in ("confidence", "learned"):
        mux = registry.apply("share.multiplex", small,
                             {"mode": mode, "router_epochs": 3, "target_big_share": 0.2}, ctx)
        print(f"\n{mode} router (threshold for 20% big on val: {mux.threshold:.4f}); "
              f"test accuracy at that threshold {evaluate(mux, data.test):.4f}")
        print("| cut | big share | accuracy | mean MACs / input |")
        print("|---:|---:|---:|---:|")
        for r in multiplex_report(mux, data):
            print(f"| {r['cut']:.4f} | {r['big_share']:.0%} | {100 * r['accuracy']:.2f} | "
                  f"{r['mean_macs']:,.0f} |")


if __name__ == "__main__":
    main()
