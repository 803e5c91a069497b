"""Claim (issue 3, benchmark 2): channel pruning of the small VGG-BN and ResNet on Fashion-MNIST
gives >= 2x measured latency speed-up (torch eager, 1 thread, batch 1 and 64; ONNX Runtime) at
<= 1 pt accuracy loss; every criterion at equal MACs reduction and the same fine-tuning budget,
beside Torch-Pruning's own MagnitudePruner run in the same script.

    .venv/bin/python -m benchmarks.prune_channel            # 60k train, longer training
    .venv/bin/python -m benchmarks.prune_channel --quick    # 8k train subset, few epochs
"""
from __future__ import annotations

import argparse
import copy

import torch
import torch_pruning as tp

from benchmarks.prune_common import (Timer, accuracy, fashion, latency_ms, machine, macs,
                                     params, table, trained)
from dnnzip.registry import Context, apply
from dnnzip.train import TrainSettings, fit

CRITERIA = ["l1", "l2", "bn_scale", "taylor", "thinet", "reconstruction"]


def tp_magnitude(base, x, ratio, data, ft, lr):
    model = copy.deepcopy(base)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    pruner = tp.pruner.MagnitudePruner(model, x, importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=ratio, ignored_layers=[last])
    pruner.step()
    if ft:
        fit(model, data, TrainSettings(epochs=ft, lr=lr, batch_size=128))
    return model.eval()


def measure(name, method, model, base_acc, data, x1, x64, base_lat, t, repeats):
    a = accuracy(model, data)
    lat = {"b1": latency_ms(model, x1, "torch", repeats), "b64": latency_ms(model, x64, "torch",
                                                                            max(5, repeats // 5)),
           "ort": latency_ms(model, x1, "onnxruntime", repeats)}
    row = {"model": name, "method": method, "acc %": 100 * a, "drop pt": 100 * (base_acc - a),
           "MACs": macs(model, x1), "params": params(model),
           "torch b1 ms": lat["b1"], "torch b64 ms": lat["b64"], "ORT b1 ms": lat["ort"],
           "time s": t}
    if base_lat:
        row.update({"x b1": base_lat["b1"] / lat["b1"], "x b64": base_lat["b64"] / lat["b64"],
                    "x ORT": base_lat["ort"] / lat["ort"]})
    return row, lat


def run(name, data, ep, ft, ratio, lr, repeats):
    base = trained(name, data, epochs=ep, lr=lr)
    x1, x64 = data.example_input(1), torch.stack([data.test[i][0] for i in range(64)])
    base_acc = accuracy(base, data)
    row, base_lat = measure(name, "dense baseline", base, base_acc, data, x1, x64, None, 0.0,
                            repeats)
    rows = [row]
    for crit in CRITERIA:
        ctx = Context(data=data, example_input=x1, epochs=ft, lr=lr, batch_size=128, seed=0)
        with Timer() as t:
            out = apply("prune.channel", base, {"criterion": crit, "ratio": ratio}, ctx)
        rows.append(measure(name, f"dnnzip {crit}", out, base_acc, data, x1, x64, base_lat, t.s,
                            repeats)[0])
    with Timer() as t:
        peer = tp_magnitude(base, x1, ratio, data, ft, lr)
    rows.append(measure(name, "peer: Torch-Pruning MagnitudePruner (L1)", peer, base_acc, data,
                        x1, x64, base_lat, t.s, repeats)[0])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--models", default="vgg_bn,resnet")
    ap.add_argument("--ft", type=int, default=None, help="fine-tune epochs (every method)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    limit, ep, ft, repeats = (8000, 3, 1, 30) if args.quick else (None, 8, 2, 100)
    ft = ft if args.ft is None else args.ft
    data = fashion(limit)
    cols = ["model", "method", "acc %", "drop pt", "MACs", "params", "torch b1 ms", "x b1",
            "torch b64 ms", "x b64", "ORT b1 ms", "x ORT", "time s"]
    print(f"## prune.channel at ratio {args.ratio} per group (equal MACs for every method), "
          f"Fashion-MNIST ({len(data.train)} train / {len(data.test)} test), baseline {ep} "
          f"epochs, fine-tune {ft} epoch(s) for every method\n\nMachine: {machine()}\n")
    for name in args.models.split(","):
        print(table(run(name, data, ep, ft, args.ratio, 1e-3, repeats), cols) + "\n", flush=True)


if __name__ == "__main__":
    main()
