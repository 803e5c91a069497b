"""Claim: NestDNN-style nesting (``capacity.nest``, [73]) packs >= 3 capacities of one model
into one .dnz file; smaller capacities cost fewer MACs and less latency, and joint recovery
training keeps each usable; ``select_capacity`` picks one from a latency budget.

    .venv/bin/python benchmarks/nest_capacity.py           # 20k Fashion-MNIST samples
    .venv/bin/python benchmarks/nest_capacity.py --quick   # 4k samples
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.factor_common import acc, data_for, latency, machine, table, trained
from dnnzip.artifact import pack, unpack
from dnnzip.capacity import capacity_table, select_capacity, set_capacity
from dnnzip.capacity.nest import NestConfig, apply_nest
from dnnzip.registry import Context


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", default="lenet5")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ep, rec = (2, 2) if args.quick else (6, 4)
    data = data_for(args.model, args.quick)
    base = trained(args.model, data, epochs=ep)
    x = data.example_input(8)
    caps = (0.25, 0.5, 0.75, 1.0)
    ctx = Context(data=data, teacher=base, example_input=x, epochs=rec, lr=1e-3)
    nested = apply_nest(base, NestConfig(capacities=caps), ctx)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "nested.dnz")
        size = pack(nested, path)
        dense = pack(base, os.path.join(d, "base.dnz"))
        loaded = unpack(path)
    rows = capacity_table(loaded, example=x, data=data, repeats=50)
    for r in rows:  # the same robust timing as the other benchmarks
        set_capacity(loaded, r["capacity"])
        r["latency_ms"] = latency(loaded, x)
        r["fraction"] = caps[r["capacity"]]
    base_row = {"capacity": "original", "fraction": 1.0, "accuracy": acc(base, data),
                "latency_ms": latency(base, x)}
    budget = (rows[1]["latency_ms"] + rows[2]["latency_ms"]) / 2
    chosen = select_capacity(loaded, max_latency_ms=budget, table=rows)
    print(f"## capacity.nest on {args.model}, Fashion-MNIST {len(data.train)} train / "
          f"{len(data.test)} test; baseline {ep} epochs, joint recovery {rec} epochs (labels "
          f"for the full capacity, in-place KD from it for the others)\n")
    print(table([base_row] + rows, ["capacity", "fraction", "filters", "macs", "energy_mj",
                                     "latency_ms", "accuracy"]) + "\n")
    print(f"One file holds all {len(rows)} capacities: {size} bytes (the original alone: "
          f"{dense} bytes). select_capacity(max_latency_ms={budget:.3f}) -> capacity {chosen}.\n")
    print(f"Machine: {machine()}")


if __name__ == "__main__":
    main()
