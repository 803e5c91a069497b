"""k-bit linear / log and binary quantization of LeNet-5 on Fashion-MNIST: accuracy (torch,
after reloading the packed .dnz) and bytes of the packed file, PTQ and QAT; plus the bit-packed
XNOR-popcount path vs the float simulation of the binary model (agreement and speed).

    .venv/bin/python benchmarks/quant_lowbit.py --quick
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
torch.set_num_threads(1)

from dnnzip import registry, zoo  # noqa: E402
from dnnzip.artifact import pack, unpack  # noqa: E402
from dnnzip.data import load_data  # noqa: E402
from dnnzip.quant.xnor import packed_inference  # noqa: E402
from dnnzip.registry import Context  # noqa: E402
from dnnzip.train import TrainSettings, evaluate, fit  # noqa: E402


def measure(model, data, tmp, label):
    path = os.path.join(tmp, label.replace(" ", "_").replace("/", "") + ".dnz")
    n = pack(model, path)
    reloaded = unpack(path).eval()
    return evaluate(reloaded, data.test), n, reloaded


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    epochs, max_batches = (1, 150) if args.quick else (5, None)
    data = load_data("fashion-mnist", limit=10000 if args.quick else None, seed=0)
    torch.manual_seed(0)
    model = zoo.build("lenet5")
    fit(model, data, TrainSettings(epochs=epochs, batch_size=128, lr=1e-3, seed=0,
                                   max_batches=max_batches))
    model.eval()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        acc, n, _ = measure(model, data, tmp, "fp32")
        rows.append(("fp32", "-", acc, n))
        ctx = Context(data=data, example_input=data.example_input(1), epochs=1, batch_size=128,
                      lr=2e-4, max_batches=30 if args.quick else None, seed=0)
        for mode in ("linear", "log"):
            for bits in (8, 6, 4, 3, 2):
                for qat in (False, True):
                    q = registry.apply(f"quant.{mode}", model, {"bits": bits, "qat": qat}, ctx)
                    label = f"{mode} w{bits}/a8"
                    acc, n, _ = measure(q, data, tmp, label + str(qat))
                    rows.append((label, "QAT 1 ep" if qat else "PTQ", acc, n))
                    print(rows[-1], flush=True)
        binary = None
        for mode in ("deterministic", "stochastic"):
            for qat in (False, True):
                q = registry.apply("quant.binary", model, {"mode": mode, "qat": qat}, ctx)
                acc, n, reloaded = measure(q, data, tmp, f"binary {mode} {qat}")
                rows.append((f"binary {mode}", "QAT 1 ep" if qat else "PTQ", acc, n))
                print(rows[-1], flush=True)
                if mode == "deterministic" and qat:
                    binary = reloaded
        print("| scheme (first/last layer 8-bit) | mode | accuracy | packed .dnz bytes |")
        print("|---|---|---|---|")
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[2]:.4f} | {r[3]} |")
        x = torch.cat([b[0] for b in data.loader("test", batch_size=512)])
        with torch.no_grad():
            t = time.perf_counter()
            y_float = binary(x)
            t_float = time.perf_counter() - t
            with packed_inference(binary, backend="numpy"):  # quant_xnor.py times the C path
                t = time.perf_counter()
                y_xnor = binary(x)
                t_xnor = time.perf_counter() - t
        agree = (y_float.argmax(1) == y_xnor.argmax(1)).float().mean().item()
        print(f"\nXNOR-popcount path vs float simulation on {len(x)} test images: "
              f"{agree * 100:.2f} % identical predictions, max |logit diff| "
              f"{(y_float - y_xnor).abs().max().item():.2e}; whole model time float sim "
              f"{t_float:.2f} s, packed numpy {t_xnor:.2f} s (1 thread)")


if __name__ == "__main__":
    main()
