"""Claim: a FastDeepIoT-style latency model ([70]; tree-structured linear regression on layer
configurations, profiled on torch eager with 1 thread) predicts whole-model latency of
held-out architectures with MAPE <= 10 %, better than a MACs-only linear fit.

    .venv/bin/python benchmarks/latency_model.py           # 40 train / 20 held-out archs + zoo
    .venv/bin/python benchmarks/latency_model.py --quick   # 16 train / 8 held-out archs
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.factor_common import machine, table
from dnnzip import zoo
from dnnzip.profile.latency_model import (LatencyModel, layer_configs, mape, measure_model,
                                          profile_layer)


def random_cnn(rng: np.random.Generator, size: int = 28) -> nn.Module:
    """A random small CNN: conv / depthwise-separable blocks, BN, pools, GAP + 1-2 FC."""
    layers, c, h = [], 1, size
    for _ in range(int(rng.integers(2, 7))):
        out = int(rng.choice([8, 16, 24, 32, 48, 64, 96, 128]))
        stride = 2 if h >= 8 and rng.random() < 0.3 else 1
        if c > 1 and rng.random() < 0.4:
            layers += [nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False), nn.BatchNorm2d(c),
                       nn.ReLU(), nn.Conv2d(c, out, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
        else:
            k = int(rng.choice([1, 3, 5]))
            layers.append(nn.Conv2d(c, out, k, stride, k // 2, bias=bool(rng.random() < 0.5)))
            if rng.random() < 0.6:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU())
        h = (h - 1) // stride + 1
        c = out
        if h >= 8 and rng.random() < 0.3:
            layers.append(nn.MaxPool2d(2))
            h //= 2
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if rng.random() < 0.5:
        hidden = int(rng.choice([32, 64, 128, 256]))
        layers += [nn.Linear(c, hidden), nn.ReLU()]
        c = hidden
    layers.append(nn.Linear(c, 10))
    return nn.Sequential(*layers).eval()


def sampled_layers(rng: np.random.Generator, n: int) -> list[nn.Module]:
    """FastDeepIoT profiles the configuration space, not only the layers of the training
    architectures: ``n`` random conv / depthwise / linear layers with their inputs."""
    out = []
    for _ in range(n):
        kind = rng.choice(["conv", "dw", "linear"], p=[0.45, 0.2, 0.35])
        if kind == "linear":
            fin, fout = int(rng.integers(8, 2049)), int(rng.integers(8, 1025))
            out.append((nn.Sequential(nn.Linear(fin, fout, bias=bool(rng.random() < 0.8))),
                        torch.randn(1, fin)))
            continue
        c = int(rng.choice([1, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256]))
        h = int(rng.choice([4, 7, 8, 14, 16, 28]))
        s = int(rng.choice([1, 1, 2]))
        if kind == "dw" and c > 1:
            m = nn.Conv2d(c, c, 3, s, 1, groups=c, bias=bool(rng.random() < 0.3))
        else:
            k = int(rng.choice([1, 3, 5]))
            m = nn.Conv2d(c, int(rng.choice([8, 16, 32, 50, 64, 96, 128, 256])), k, s, k // 2,
                          bias=bool(rng.random() < 0.5))
        out.append((nn.Sequential(m), torch.randn(1, c, h, h)))
    return out


def model_latency(m: nn.Module, x: torch.Tensor) -> float:
    return min(measure_model(m, x, repeats=30, warmup=5) for _ in range(3))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--depth", type=int, default=4, help="regression tree depth per layer kind")
    args = ap.parse_args()
    torch.set_num_threads(1)
    n_train, n_test = (16, 8) if args.quick else (40, 20)
    rng = np.random.default_rng(args.seed)
    x = torch.randn(1, 1, 28, 28)
    train = [random_cnn(rng) for _ in range(n_train)]
    test = [random_cnn(rng) for _ in range(n_test)]
    zoo_models = {n: zoo.build(n).eval() for n in ("lenet300", "lenet5", "vgg_bn", "mobilenet",
                                                   "resnet", "shufflenet")}
    t0 = time.perf_counter()
    configs = {}
    for m in train:
        for c in layer_configs(m, x):
            configs.setdefault(c, None)
    for m, xi in sampled_layers(rng, 100 if args.quick else 300):
        for c in layer_configs(m, xi):
            configs.setdefault(c, None)
    for c in configs:
        configs[c] = profile_layer(c, repeats=30, warmup=5)
    t_prof = time.perf_counter() - t0
    lm = LatencyModel.fit(list(configs.items()), max_depth=args.depth)
    measured_train = [(layer_configs(m, x), model_latency(m, x)) for m in train]
    lm.calibrate(measured_train)
    with tempfile.TemporaryDirectory() as d:  # what is evaluated is the reloaded JSON model
        path = os.path.join(d, "latency.json")
        lm.save(path)
        json_bytes = os.path.getsize(path)
        lm = LatencyModel.load(path)

    # peer baseline: latency = a * MACs + b, fitted on the same training architectures
    def total_macs(m):
        return sum(c.macs for c in layer_configs(m, x))
    A = np.array([[total_macs(m), 1.0] for m in train])
    y = np.array([t for _, t in measured_train])
    coef = np.linalg.lstsq(A / y[:, None], np.ones_like(y), rcond=None)[0]

    rows = []
    groups = (("held-out random CNNs", test), ("zoo models", list(zoo_models.values())))
    for group, models in groups:
        true = [model_latency(m, x) for m in models]
        pred = [lm.predict(m, x) for m in models]
        base = [coef[0] * total_macs(m) + coef[1] for m in models]
        rows.append({"architectures": f"{group} ({len(models)})", "MAPE_latency_model":
                     mape(pred, true), "MAPE_MACs_linear": mape(base, true),
                     "true_ms_range": f"{min(true):.3f}-{max(true):.3f}"})
        if group == "zoo models":
            zoo_rows = [{"model": n, "true_ms": t, "pred_ms": p, "macs_linear_ms": b}
                        for n, t, p, b in zip(zoo_models, true, pred, base)]
    train_pred = [lm.predict_configs(c) for c, _ in measured_train]
    rows.insert(0, {"architectures": f"training CNNs ({n_train})",
                    "MAPE_latency_model": mape(train_pred, y),
                    "MAPE_MACs_linear": mape(A @ coef, y),
                    "true_ms_range": f"{y.min():.3f}-{y.max():.3f}"})
    print(f"## FastDeepIoT latency model: {len(configs)} profiled layer configurations (those of "
          f"the training architectures + randomly sampled conv/depthwise/linear layers) "
          f"({t_prof:.0f} s), {n_train} training architectures, model JSON {json_bytes} bytes, "
          f"calibration a={lm.calibration[0]:.3f}, b={lm.calibration[1]:.4f} ms, "
          f"c={lm.calibration[2]:.4f} ms/layer\n")
    print(table(rows, ["architectures", "MAPE_latency_model", "MAPE_MACs_linear",
                       "true_ms_range"]) + "\n")
    print(table(zoo_rows, ["model", "true_ms", "pred_ms", "macs_linear_ms"]) + "\n")
    print(f"Machine: {machine()}; latencies: lowest of 3 rounds of the 10th percentile of 30 "
          "calls, batch 1, 1x28x28 input")


if __name__ == "__main__":
    main()
