"""XNOR-popcount inference (``dnnzip.quant.xnor``) vs the float simulation of the same binary
LeNet-5: agreement and speed, whole model and per binary layer.

The model is the binary one of ``benchmarks/quant_lowbit.py --quick`` (LeNet-5 trained 1 epoch x
150 batches on 10k Fashion-MNIST images, then ``quant.binary`` deterministic with 1 epoch of QAT
capped at 30 batches, lr 2e-4; conv1 and fc2 stay 8-bit, conv2 and fc1 are binary). Three paths
on the same test images: the float simulation (torch, ``gain * Sign(x - t)`` conv/linear with
``alpha * Sign(w)``), the C kernel (``dnnzip/kernels/xnor.c``) and the numpy path. Times are
medians of ``--repeats`` CPU-time measurements (``time.process_time``; the cores are shared),
1 thread everywhere.

    .venv/bin/python benchmarks/quant_xnor.py [--quick]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
torch.set_num_threads(1)

from dnnzip import kernels, registry, zoo  # noqa: E402
from dnnzip.data import load_data  # noqa: E402
from dnnzip.quant.binary import BinaryLayer  # noqa: E402
from dnnzip.quant.xnor import packed_inference  # noqa: E402
from dnnzip.registry import Context  # noqa: E402
from dnnzip.train import TrainSettings, fit  # noqa: E402


def median_time(fn, repeats: int) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        ts.append(time.process_time() - t)
    return statistics.median(ts)


def binary_model(quick: bool):
    data = load_data("fashion-mnist", limit=10000, seed=0)
    torch.manual_seed(0)
    model = zoo.build("lenet5")
    fit(model, data, TrainSettings(epochs=1, batch_size=128, lr=1e-3, seed=0, max_batches=150))
    ctx = Context(data=data, example_input=data.example_input(1), epochs=1, batch_size=128,
                  lr=2e-4, max_batches=30, seed=0)
    q = registry.apply("quant.binary", model.eval(), {"mode": "deterministic", "qat": True}, ctx)
    return q.eval(), data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer images and repeats")
    ap.add_argument("--images", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args()
    images = args.images or (1000 if args.quick else 10000)
    repeats = args.repeats or (3 if args.quick else 7)
    if kernels.load("xnor") is None:
        raise SystemExit(f"the C kernel is unavailable: {kernels.why('xnor')}")
    model, data = binary_model(args.quick)
    x = torch.cat([b[0] for b in data.loader("test", batch_size=512)])[:images]

    inputs = {}  # each binary layer's real input, captured in the float simulation

    def keep(name):
        def hook(mod, inp):
            inputs.setdefault(name, []).append(inp[0].detach())
        return hook

    layers = {n: m for n, m in model.named_modules() if isinstance(m, BinaryLayer)}
    handles = [m.register_forward_pre_hook(keep(n)) for n, m in layers.items()]
    with torch.no_grad():
        y = {"float": model(x)}
    for h in handles:
        h.remove()
    with torch.no_grad():
        for backend in ("c", "numpy"):
            with packed_inference(model, backend=backend):
                y[backend] = model(x)
    print(f"Binary LeNet-5, {len(x)} test images, {repeats} repeats (median CPU time), 1 thread; "
          f"torch {torch.__version__}.\n")
    print("| path | predictions = float sim | max abs logit diff | whole model s | images/s |")
    print("|---|---:|---:|---:|---:|")
    whole = {}
    with torch.no_grad():
        whole["float"] = median_time(lambda: model(x), repeats)
        for backend in ("c", "numpy"):
            with packed_inference(model, backend=backend):
                whole[backend] = median_time(lambda: model(x),
                                             repeats if backend == "c" else max(1, repeats // 3))
    for path, label in (("float", "float simulation (torch)"), ("c", "XNOR-popcount, C"),
                        ("numpy", "XNOR-popcount, numpy")):
        agree = (y[path].argmax(1) == y["float"].argmax(1)).float().mean().item()
        diff = (y[path] - y["float"]).abs().max().item()
        print(f"| {label} | {100 * agree:.2f} % | {diff:.2e} | {whole[path]:.3f} | "
              f"{len(x) / whole[path]:,.0f} |")
    print("\nPer binary layer, on its real input (the first 1 and 256 test images):\n")
    print("| layer | shape | batch | float sim ms | C ms | numpy ms | C vs float | C vs numpy |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, mod in layers.items():
        inp = torch.cat(inputs[name])
        shape = (f"{mod.in_channels}->{mod.out_channels}" + (
            f", {mod.kernel_size[0]}x{mod.kernel_size[1]} on {tuple(inp.shape[2:])}"
            if mod.kind == "conv2d" else ""))
        for batch in (1, 256):
            xb = inp[:batch]
            t = {}
            with torch.no_grad():
                t["float"] = median_time(lambda: mod(xb), repeats)
                for backend in ("c", "numpy"):
                    mod._xnor = backend
                    t[backend] = median_time(lambda: mod(xb), repeats)
                    mod._xnor = False
            print(f"| {name} | {shape} | {batch} | {1e3 * t['float']:.3f} | {1e3 * t['c']:.3f} | "
                  f"{1e3 * t['numpy']:.3f} | {t['float'] / t['c']:.1f}x | "
                  f"{t['numpy'] / t['c']:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
