"""EIE inference (Han et al. 2016 [37]) vs dense matmul on the shared sparse LeNet-300-100 layers.

Loads the final ``.dnz`` of ``benchmarks/share_deep_compression.py`` (pruned + k-means shared
LeNet-300-100), feeds real Fashion-MNIST test images, and times each fc layer on its real input
activations (ReLU-sparse after fc1): ``EIELinear`` (CSC, codebook decode, zero-activation skipping)
with its C kernel (``dnnzip/kernels/eie.c``) and its numpy path, dense numpy ``x @ W.T``, dense
torch ``F.linear`` and torch CSR sparse ``mm`` (the PyPI peer in the same process). Outputs are checked equal within 1e-4; memory is the representation's
bytes (EIE at 4-bit relative indices + b-bit codes vs fp32 dense vs CSR fp32/int32).

    .venv/bin/python benchmarks/share_eie.py --quick
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # 1 thread, as the house rules ask; also
os.environ.setdefault("OMP_NUM_THREADS", "1")  # avoids BLAS oversubscription on a shared box
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from dnnzip import kernels  # noqa: E402
from dnnzip.artifact import unpack  # noqa: E402
from dnnzip.data import load_data  # noqa: E402
from dnnzip.share.eie import EIELinear  # noqa: E402


def median_time(fn, repeats: int) -> float:
    """Median CPU seconds of one call (process time: the box is shared, wall time is noise)."""
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        ts.append(time.process_time() - t0)
    return statistics.median(ts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifact", default="runs/share_dc/lenet300/02_shared.dnz")
    p.add_argument("--quick", action="store_true", help="fewer repeats")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    args = p.parse_args()
    torch.set_num_threads(1)
    if not Path(args.artifact).is_file():
        raise SystemExit(f"{args.artifact} not found: run benchmarks/share_deep_compression.py "
                         "--model lenet300 first")
    repeats = 20 if args.quick else 100
    model = unpack(args.artifact)
    data = load_data("fashion-mnist", seed=0, limit=1000)
    x_all = torch.stack([data.test[i][0] for i in range(max(args.batch))]).flatten(1)
    if kernels.load("eie") is None:
        raise SystemExit(f"the EIE C kernel is unavailable: {kernels.why('eie')}")
    print(f"| layer | batch | nnz / size | input zeros | EIE C ms | EIE numpy ms | numpy dense ms "
          f"| torch dense ms | torch CSR ms | C vs torch dense | EIE B | dense fp32 B | CSR B "
          f"| max abs diff (C, numpy) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for b in args.batch:
        h = x_all[:b]
        for name in ("fc1", "fc2", "fc3"):
            layer = getattr(model, name)
            eie = EIELinear.from_linear(layer)
            w = layer.weight.detach().numpy()
            bias = layer.bias.detach().numpy()
            hn = h.numpy()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
                csr = layer.weight.detach().to_sparse_csr()
            ref = F.linear(h, layer.weight, layer.bias).detach()
            diff_c = float(np.abs(eie(hn, backend="c") - ref.numpy()).max())
            diff = float(np.abs(eie(hn, backend="numpy") - ref.numpy()).max())
            t_c = median_time(lambda: eie(hn, backend="c"), repeats)
            t_eie = median_time(lambda: eie(hn, backend="numpy"), repeats)
            t_np = median_time(lambda: hn @ w.T + bias, repeats)
            with torch.no_grad():
                t_t = median_time(lambda: F.linear(h, layer.weight, layer.bias), repeats)
                t_csr = median_time(lambda: torch.sparse.mm(csr, h.T).T + layer.bias, repeats)
            csr_b = eie.nnz * 8 + 4 * (layer.out_features + 1)
            print(f"| {name} | {b} | {eie.nnz:,} / {w.size:,} | {float((hn == 0).mean()):.0%} | "
                  f"{1e3 * t_c:.3f} | {1e3 * t_eie:.3f} | {1e3 * t_np:.3f} | {1e3 * t_t:.3f} | "
                  f"{1e3 * t_csr:.3f} | {t_t / t_c:.2f}x | {eie.memory_bytes():,} | "
                  f"{4 * w.size:,} | {csr_b:,} | {diff_c:.1e}, {diff:.1e} |", flush=True)
            h = torch.relu(ref)


if __name__ == "__main__":
    main()
