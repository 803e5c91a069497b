"""Claim: truncated SVD (survey Eq. 7-9, [45]) of LeNet-300-100's fc1 and of the GRU
classifier's recurrent gate matrix trades storage/compute gains S_g, C_g against accuracy; a
short fine-tune recovers most of the loss at moderate ranks.

    .venv/bin/python benchmarks/factor_svd.py            # 20k Fashion-MNIST / mnist1d samples
    .venv/bin/python benchmarks/factor_svd.py --quick    # 4k samples, fewer epochs
"""
from __future__ import annotations

import argparse
import copy
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.factor_common import (acc, data_for, finetune_settings, latency, machine,
                                      table, trained)
from dnnzip.factor.svd import SVDConfig, apply_svd, gains
from dnnzip.registry import Context
from dnnzip.train import fit


def sweep(name: str, layer: str, ranks: list[int], shape: tuple[int, int], data, base,
          ft_epochs: int, x) -> list[dict]:
    rows = [{"rank": "dense", "acc": acc(base, data), "latency_ms": latency(base, x)}]
    for r in ranks:
        cfg = SVDConfig(rule="fixed", rank=r, ignore=("re:(?!" + layer + "$).*",))
        m = apply_svd(base, cfg, Context())
        g = gains(shape[0], shape[1], r)
        row = {"rank": r, "S_g": g["S_g"], "C_g": g["C_g"], "S_g_folded": g["S_g_folded"],
               "acc": acc(m, data), "latency_ms": latency(m, x)}
        if ft_epochs:
            tuned = copy.deepcopy(m)
            fit(tuned, data, finetune_settings(ft_epochs))
            row["acc_ft"] = acc(tuned, data)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ep, ft = (2, 1) if args.quick else (8, 1)
    cols = ["rank", "S_g", "C_g", "S_g_folded", "acc", "acc_ft", "latency_ms"]

    data = data_for("lenet300", args.quick)
    base = trained("lenet300", data, epochs=ep)
    x = data.example_input(1)
    rows = sweep("lenet300", base_fc1 := _first_linear(base), [10, 20, 40, 80, 160], (300, 784),
                 data, base, ft, x)
    print(f"## factor.svd on LeNet-300-100 `{base_fc1}` (300x784), Fashion-MNIST "
          f"{len(data.train)} train / {len(data.test)} test, baseline {ep} epochs, "
          f"fine-tune {ft} epoch\n")
    print(table(rows, cols) + "\n")

    data = data_for("gru", args.quick)
    gep = 4 if args.quick else 30
    base = trained("gru", data, epochs=gep, lr=3e-3)
    x = data.example_input(1)
    rows = []
    rows.append({"rank": "dense", "acc": acc(base, data), "latency_ms": latency(base, x)})
    for r in (4, 8, 16, 32):
        m = apply_svd(base, SVDConfig(rule="fixed", rank=r, ignore=("fc",)), Context())
        # weight_ih (192x1) is rank 1 already: min_gain leaves it dense; weight_hh is 192x64
        g = gains(192, 64, r)
        row = {"rank": r, "S_g": g["S_g"], "C_g": g["C_g"], "S_g_folded": g["S_g_folded"],
               "acc": acc(m, data), "latency_ms": latency(m, x)}
        tuned = copy.deepcopy(m)
        fit(tuned, data, finetune_settings(ft, lr=1e-3))
        row["acc_ft"] = acc(tuned, data)
        rows.append(row)
    print(f"## factor.svd on the GRU classifier `rnn.weight_hh_l0` (192x64), mnist1d "
          f"{len(data.train)} train / {len(data.test)} test, baseline {gep} epochs, "
          f"fine-tune {ft} epoch\n")
    print(table(rows, cols) + "\n")
    print(f"Machine: {machine()}")


def _first_linear(model) -> str:
    return next(n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear))


if __name__ == "__main__":
    main()
