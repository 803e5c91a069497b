"""The packer's default for a tensor nobody gave an encoding: the smallest *lossless* one.

Candidates: ``raw``; ``codebook`` when the tensor has at most 256 distinct values (weight sharing,
low-bit codes, masks); ``sparse`` when at least a quarter of it is zero (connection pruning), with
its entries as a codebook when they are few. Each candidate is encoded and the fewest bytes win,
so the size the report shows is what a careful user would have chosen by hand. Small tensors
(< 64 elements) stay raw: their streams cost more in manifest than they save.
"""
from __future__ import annotations

import numpy as np

MIN_ELEMENTS = 64


def candidates(arr: np.ndarray) -> list[tuple[str, dict]]:
    if arr.size < MIN_ELEMENTS or arr.dtype == np.bool_:
        return [("raw", {})]
    out: list[tuple[str, dict]] = [("raw", {})]
    flat = arr.ravel()
    view = flat.view(f"u{flat.dtype.itemsize}") if flat.dtype.kind == "f" else flat
    distinct = len(np.unique(view[: 1 << 20])) if flat.size > 1 << 20 else len(np.unique(view))
    if distinct <= 256:
        out.append(("codebook", {}))
    zeros = float((view == 0).mean())
    if zeros >= 0.25:
        nz_distinct = len(np.unique(view[view != 0])) if zeros < 1 else 0
        values = "codebook" if nz_distinct <= 256 else "raw"
        for gap_bits in (4, 5, 8):
            out.append(("sparse", {"gap_bits": gap_bits, "values": values}))
    return out


def smallest(arr: np.ndarray, encode) -> tuple[str, dict, dict, dict]:
    """Encode with every candidate; return (name, options, streams, meta) of the smallest."""
    best = None
    for name, opts in candidates(arr):
        streams, meta = encode(name, arr, opts)
        size = sum(len(v) for v in streams.values())
        if best is None or size < best[0]:
            best = (size, name, opts, streams, meta)
    return best[1], best[2], best[3], best[4]
