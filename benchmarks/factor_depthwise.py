"""Claim: the MobileNet redesign (``design.depthwise``, [29]) of the small VGG-BN cuts
parameters and MACs several-fold; the least-squares initialisation plus a short distillation
from the original recovers most of the accuracy. Tucker-2 (``factor.conv``) shown alongside.

    .venv/bin/python benchmarks/factor_depthwise.py           # 20k Fashion-MNIST samples
    .venv/bin/python benchmarks/factor_depthwise.py --quick   # 4k samples, 1 epoch each
"""
from __future__ import annotations

import argparse
import copy
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.factor_common import (acc, data_for, latency, machine, macs, params, table,
                                      trained)
from dnnzip.factor.conv import ConvFactorConfig, apply_conv
from dnnzip.factor.design import DepthwiseConfig, apply_depthwise
from dnnzip.registry import Context


def _reinit(model):
    """Same architecture, fresh random weights (ablation: no least-squares init)."""
    m = copy.deepcopy(model)
    for mod in m.modules():
        if hasattr(mod, "reset_parameters") and mod is not m:
            mod.reset_parameters()
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--kd-epochs", type=int, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ep = 2 if args.quick else 8
    kd = args.kd_epochs if args.kd_epochs is not None else (1 if args.quick else 3)
    data = data_for("vgg_bn", args.quick)
    base = trained("vgg_bn", data, epochs=ep)
    x = data.example_input(1)
    ctx0 = Context(data=data, epochs=0)
    ctx = Context(data=data, teacher=base, epochs=kd, lr=1e-3, batch_size=128)
    rows = []

    def row(name, m, **extra):
        rows.append({"model": name, "params": params(m), "MACs": macs(m, x),
                     "latency_ms": latency(m, x), "acc": acc(m, data), **extra})

    row("vgg_bn (original)", base)
    ls = apply_depthwise(base, DepthwiseConfig(), ctx0)
    row("depthwise, LS init, no training", ls)
    row(f"depthwise, LS init + KD {kd} ep", apply_depthwise(base, DepthwiseConfig(), ctx))
    rnd = _reinit(ls)
    from dnnzip.factor._common import recover
    recover(rnd, ctx, teacher=base)
    row(f"depthwise, random init + KD {kd} ep", rnd)
    mult = DepthwiseConfig(multiplier=4)
    row("depthwise x4 multiplier, LS init, no training", apply_depthwise(base, mult, ctx0))
    row(f"depthwise x4 multiplier, LS init + KD {kd} ep", apply_depthwise(base, mult, ctx))
    row(f"depthwise width 0.5, LS + KD {kd} ep",
        apply_depthwise(base, DepthwiseConfig(width=0.5), Context(
            data=data, teacher=base, epochs=kd, example_input=data.example_input(8))))
    row(f"tucker2 energy 0.9 + FT {kd} ep",
        apply_conv(base, ConvFactorConfig(energy=0.9, finetune=True, distill=True), ctx))
    print(f"## design.depthwise on vgg_bn, Fashion-MNIST {len(data.train)} train / "
          f"{len(data.test)} test, baseline {ep} epochs\n")
    print(table(rows, ["model", "params", "MACs", "latency_ms", "acc"]) + "\n")
    print(f"Machine: {machine()}")


if __name__ == "__main__":
    main()
