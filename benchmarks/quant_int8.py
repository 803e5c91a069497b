"""int8 PTQ of LeNet-5 and VGG-BN on Fashion-MNIST, measured in ONNX Runtime.

For each model: train fp32 (few epochs), export fp32 ONNX, then compare on the same test split
and the same calibration samples: dnnzip quant.int8 (min-max / percentile / MSE calibration, and
QAT), ONNX Runtime's ``quantize_static`` with its defaults, and NNCF's ``nncf.quantize`` (ONNX
backend, defaults). Reports ORT accuracy, SQNR of the logits vs fp32, ORT latency (batch 1,
1 thread, median of repeats), ONNX file bytes, the bytes of dnnzip's own ``.dnz`` artifact
(``dnnzip.artifact.pack``, default lossless encodings; fp32 row: the trained float model), and
which integer kernels ORT runs.

    .venv/bin/python benchmarks/quant_int8.py --quick
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
torch.set_num_threads(1)

from dnnzip import registry, zoo  # noqa: E402
from dnnzip.artifact import pack  # noqa: E402
from dnnzip.data import load_data  # noqa: E402
from dnnzip.quant import onnx_qdq  # noqa: E402
from dnnzip.registry import Context  # noqa: E402
from dnnzip.train import TrainSettings, fit  # noqa: E402


def export_fp32(model, example, path):
    prog = torch.onnx.export(model.eval(), (example,), dynamo=True, verbose=False,
                             input_names=["input"], output_names=["output"],
                             dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    prog.save(path, external_data=False)
    onnx_qdq.strip(path)


def arrays(ds, n=None):
    xs, ys = zip(*[ds[i] for i in range(len(ds) if n is None else min(n, len(ds)))])
    return torch.stack(xs).numpy(), torch.stack(ys).numpy()


def ort_eval(path, x, y, repeats):
    s = onnx_qdq.session(path, threads=1)
    logits = np.concatenate([s.run(None, {"input": x[i:i + 256]})[0] for i in range(0, len(x), 256)])
    return float((logits.argmax(1) == y).mean()), logits, float("nan")


def time_round_robin(paths, x1, repeats, runs=100):
    """Median per-call latency (ms), batch 1, 1 thread; sessions timed in turn each round so
    load from other processes on the shared machine hits all of them alike."""
    sessions = [onnx_qdq.session(p, threads=1) for p in paths]
    for s in sessions:
        for _ in range(30):
            s.run(None, {"input": x1})
    times = [[] for _ in paths]
    for _ in range(repeats):
        for i, s in enumerate(sessions):
            t = time.perf_counter()
            for _ in range(runs):
                s.run(None, {"input": x1})
            times[i].append((time.perf_counter() - t) / runs * 1e3)
    return [float(np.median(t)) for t in times]


def sqnr(ref, approx):
    return float(10 * np.log10((ref ** 2).sum() / max(((ref - approx) ** 2).sum(), 1e-30)))


def ort_static(fp32, out, calib_x):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": calib_x[i:i + 1]} for i in range(len(calib_x))])

        def get_next(self):
            return next(self.it, None)

    quantize_static(fp32, out, Reader(), quant_format=QuantFormat.QDQ)


def nncf_quantize(fp32, out, calib_x):
    import nncf
    import onnx
    model = onnx.load(fp32)
    ds = nncf.Dataset([calib_x[i:i + 1] for i in range(len(calib_x))],
                      lambda x: {"input": x})
    q = nncf.quantize(model, ds, subset_size=len(calib_x))
    onnx.save(q, out)
    onnx_qdq.strip(out)


def run(name, data, args, tmp, rows):
    torch.manual_seed(0)
    model = zoo.build(name)
    fit(model, data, TrainSettings(epochs=args.epochs, batch_size=128, lr=1e-3, seed=0,
                                   max_batches=args.max_batches))
    model.eval()
    x, y = arrays(data.test, args.test)
    calib_x, _ = arrays(data.calib, args.calib)
    ex = torch.from_numpy(x[:1])
    fp32 = os.path.join(tmp, f"{name}_fp32.onnx")
    export_fp32(model, ex, fp32)
    acc32, ref, lat32 = ort_eval(fp32, x, y, args.repeats)
    size32 = os.path.getsize(fp32)
    start = len(rows)
    paths = [fp32]
    rows.append((name, "fp32 (ORT)", acc32, float("inf"), lat32, size32, "-",
                 pack(model, os.path.join(tmp, f"{name}_fp32.dnz"))))
    calib_ds = torch.utils.data.TensorDataset(torch.from_numpy(calib_x), torch.zeros(len(calib_x)))
    variants = [("dnnzip PTQ minmax", dict(calibration="minmax")),
                ("dnnzip PTQ percentile", dict(calibration="percentile")),
                ("dnnzip PTQ mse", dict(calibration="mse")),
                ("dnnzip QAT (1 ep)", dict(calibration="minmax", qat=True))]
    for label, opts in variants:
        ctx = Context(data=data, example_input=ex, epochs=1, batch_size=len(calib_x) // 4 or 1,
                      lr=1e-4, max_batches=args.max_batches, seed=0)
        q = registry.apply("quant.int8", model, dict(opts, calib_batches=4), ctx)
        path = os.path.join(tmp, f"{name}_{label.split()[-1]}.onnx")
        info = onnx_qdq.export_int8(q, ex, path)
        acc, logits, lat = ort_eval(path, x, y, args.repeats)
        paths.append(path)
        rows.append((name, label, acc, sqnr(ref, logits), lat, info.bytes,
                     ",".join(f"{k}x{v}" for k, v in info.int8_ops.items()),
                     pack(q, path[:-len(".onnx")] + ".dnz")))
    for label, fn in (("ORT quantize_static", ort_static), ("NNCF quantize", nncf_quantize)):
        path = os.path.join(tmp, f"{name}_{label.split()[0]}.onnx")
        try:
            fn(fp32, path, calib_x)
        except Exception as exc:  # report, don't hide
            rows.append((name, label, float("nan"), float("nan"), float("nan"), 0, f"failed: {exc}",
                         0))
            continue
        acc, logits, lat = ort_eval(path, x, y, args.repeats)
        paths.append(path)
        kernels = {k: v for k, v in onnx_qdq.runtime_op_types(path).items()
                   if k in onnx_qdq.INT8_KERNELS}
        rows.append((name, label, acc, sqnr(ref, logits), lat, os.path.getsize(path),
                     ",".join(f"{k}x{v}" for k, v in kernels.items()), 0))
    del calib_ds
    lat = time_round_robin(paths, x[:1], args.repeats)
    ok = [i for i in range(start, len(rows)) if rows[i][5]]
    for i, t in zip(ok, lat):
        rows[i] = rows[i][:4] + (t,) + rows[i][5:]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--models", default="lenet5,vgg_bn")
    args = p.parse_args()
    args.epochs = 1 if args.quick else 5
    args.max_batches = 150 if args.quick else None
    args.limit = 20000 if args.quick else None
    args.test = 2000 if args.quick else None
    args.calib = 256
    args.repeats = 7 if args.quick else 15
    data = load_data("fashion-mnist", limit=args.limit, seed=0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            run(name, data, args, tmp, rows)
            print("| model | method | ORT acc | SQNR dB | ORT ms (b1, 1 thr) | ONNX bytes | "
                  ".dnz bytes | int8 kernels |")
            print("|---|---|---|---|---|---|---|---|")
            for r in rows:
                print(f"| {r[0]} | {r[1]} | {r[2]:.4f} | {r[3]:.1f} | {r[4]:.3f} | {r[5]} | "
                      f"{r[7] or '-'} | {r[6]} |", flush=True)
            for r in rows[1:]:
                if r[5]:
                    dnz = f", .dnz {rows[0][7] / r[7]:.3f}x" if r[7] else ""
                    print(f"{r[0]} {r[1]}: fp32 / int8 bytes: ONNX {rows[0][5] / r[5]:.3f}x{dnz}")
            rows.clear()


if __name__ == "__main__":
    main()
