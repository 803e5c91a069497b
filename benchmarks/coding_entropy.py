"""How close do dnnzip's entropy coders get to the Shannon bound, and how fast do they decode?

Streams (Deep Compression, survey ref. [35], stage 3 inputs):
- ``kmeans32``: a Laplacian "trained-looking" weight array clustered to 32 shared values (1-D
  k-means with linear initialisation, as Han et al. recommend); the stream is the index per weight.
- ``gaps5`` / ``gaps8``: relative gaps between non-zeros of a 90 %-sparse mask, with the max gap
  2**5 (fc layers in the paper) and 2**8 (conv layers), filler entries included.

For each: empirical entropy n*H, ANS and Huffman coded size (whole stream, model table included),
plain k-bit packing, and the peers zlib/gzip (level 9) and lzma on the same indices as one byte
each. Decode throughput is the median of ``--repeats`` runs, one thread.

    .venv/bin/python benchmarks/coding_entropy.py [--quick] [--out benchmarks/results/coding.md]
"""
from __future__ import annotations

import argparse
import gzip
import lzma
import os
import platform
import statistics
import sys
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dnnzip.artifact import coding  # noqa: E402
from dnnzip.artifact.encodings import get_encoding  # noqa: E402
from dnnzip.artifact.sparse import to_gaps  # noqa: E402


def kmeans_1d(w: np.ndarray, k: int, iters: int = 25) -> np.ndarray:
    """Lloyd's algorithm in 1-D with linear initialisation; returns the cluster index per weight."""
    centroids = np.linspace(w.min(), w.max(), k)
    for _ in range(iters):
        idx = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, w)
        sums = np.bincount(idx, weights=w, minlength=k)
        counts = np.bincount(idx, minlength=k)
        centroids = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        centroids.sort()
    return np.searchsorted((centroids[1:] + centroids[:-1]) / 2, w)


def streams(n: int, seed: int = 0) -> dict[str, tuple[np.ndarray, int, int]]:
    rng = np.random.default_rng(seed)
    w = rng.laplace(scale=0.05, size=n)
    out = {"kmeans32": (kmeans_1d(w, 32), 32, 5)}
    mask = (rng.random(n) >= 0.9).astype(np.float32)
    for b in (5, 8):
        gaps, _ = to_gaps(mask, b)
        out[f"gaps{b}"] = (gaps - 1, 1 << b, b)
    return out


def median_time(fn, repeats: int) -> float:
    """Median CPU time of ``fn`` (process time: the 2 cores are shared, wall time is noise)."""
    times = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return statistics.median(times)


def measure(symbols: np.ndarray, alphabet: int, bits: int, repeats: int) -> dict:
    n = len(symbols)
    row = {"n": n, "entropy_bits": coding.entropy_bits(np.bincount(symbols, minlength=alphabet))}
    for coder in coding.CODERS:
        stream, meta = coding.encode_symbols(symbols, alphabet=alphabet, coder=coder, bits=bits)
        assert np.array_equal(coding.decode_symbols(stream, meta, count=n), symbols)
        enc = median_time(lambda: coding.encode_symbols(symbols, alphabet=alphabet, coder=coder,
                                                        bits=bits), max(1, repeats // 2))
        dec = median_time(lambda: coding.decode_symbols(stream, meta, count=n), repeats)
        row[coder] = {"bits": 8 * len(stream), "enc_s": enc, "dec_s": dec}
    raw = symbols.astype(np.uint8).tobytes()
    for name, comp, decomp in [("zlib-9", lambda b: zlib.compress(b, 9), zlib.decompress),
                               ("gzip-9", lambda b: gzip.compress(b, 9, mtime=0), gzip.decompress),
                               ("lzma", lzma.compress, lzma.decompress)]:
        blob = comp(raw)
        dec = median_time(lambda: decomp(blob), repeats)
        row[name] = {"bits": 8 * len(blob), "enc_s": None, "dec_s": dec}
    return row


def tensors(n: int, repeats: int, seed: int = 0) -> list[dict]:
    """Whole-tensor decode in weights/s: a 32-value shared tensor, and the same pruned to 90 %."""
    rng = np.random.default_rng(seed)
    w = rng.laplace(scale=0.05, size=n)
    idx = kmeans_1d(w, 32)
    centroids = np.array([w[idx == c].mean() for c in range(32)], dtype=np.float32)
    shared = centroids[idx]
    pruned = np.where(rng.random(n) >= 0.9, shared, np.float32(0))
    out = []
    for label, arr, enc, opts in [
            ("codebook (ANS)", shared, "codebook", {"coder": "ans"}),
            ("codebook (Huffman)", shared, "codebook", {"coder": "huffman"}),
            ("sparse 90 % + codebook (ANS)", pruned, "sparse", {"values": "codebook", "gap_bits": 5}),
            ("sparse 90 % + codebook (Huffman)", pruned, "sparse",
             {"values": "codebook", "gap_bits": 5, "coder": "huffman"})]:
        e = get_encoding(enc)
        streams, meta = e.encode(arr, **opts)
        back = e.decode(streams, meta, [n], "float32")
        assert back.tobytes() == arr.tobytes()
        dec = median_time(lambda: e.decode(streams, meta, [n], "float32"), repeats)
        size = sum(map(len, streams.values()))
        out.append({"label": label, "n": n, "bytes": size, "dec_s": dec})
        if "ANS" in label:  # the same stream through constriction's decoder (no C kernel)
            os.environ["DNNZIP_NO_C"] = "1"
            try:
                assert e.decode(streams, meta, [n], "float32").tobytes() == arr.tobytes()
                dec = median_time(lambda: e.decode(streams, meta, [n], "float32"), repeats)
            finally:
                del os.environ["DNNZIP_NO_C"]
            out.append({"label": label.replace("(ANS)", "(ANS, constriction decoder)"), "n": n,
                        "bytes": size, "dec_s": dec})
    return out


def render(rows: dict, args, elapsed: float, tensor_rows: list[dict] = ()) -> str:
    import constriction  # noqa: F401

    lines = [
        "# Entropy coding of index streams (`dnnzip.artifact.coding`)", "",
        f"Command: `.venv/bin/python benchmarks/coding_entropy.py{' --quick' if args.quick else ''}"
        f" --n {args.n} --repeats {args.repeats}`  ",
        f"Machine: {platform.machine()} CPU, {os.cpu_count()} cores shared with other jobs, 1 "
        f"thread; Python {platform.python_version()}, numpy {np.__version__}, "
        f"constriction {_version('constriction')}. Run time {elapsed:.0f} s.", "",
        "Size is the whole coded stream (ANS: symbol histogram + words; Huffman: code lengths + "
        "lane table + bits). *vs H* is the excess over the empirical Shannon bound n·H. Peers "
        "compress the same indices stored one byte each. Throughput = symbols / median CPU time "
        "of one decode (`time.process_time`, because the cores are shared with other jobs). "
        f"ANS decodes with the C kernel ({'available' if _c() else 'NOT available: constriction'}"
        ").", "",
        "| stream | n | H (bits/sym) | coder | bits/sym | vs H | decode M sym/s | encode M sym/s |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        n, h = row["n"], row["entropy_bits"]
        for coder in (*coding.CODERS, "zlib-9", "gzip-9", "lzma"):
            r = row[coder]
            enc = f"{n / r['enc_s'] / 1e6:.1f}" if r["enc_s"] else "–"
            label = {"none": "k-bit pack", "ans": "**ANS**"}.get(coder, coder)
            lines.append(f"| {name} | {n:,} | {h / n:.4f} | {label} | {r['bits'] / n:.4f} | "
                         f"{100 * (r['bits'] / h - 1):+.2f} % | {n / r['dec_s'] / 1e6:.1f} | {enc} |")
    lines += ["", "Whole tensors (float32 weights, decode = indices + table lookup + scatter). ANS "
              "rows decode with dnnzip's C kernel (`dnnzip/kernels/ans.c`, bit-identical to "
              "constriction); the *constriction decoder* rows decode the same bytes with "
              "`constriction.stream.stack.AnsCoder` (the fallback without a C compiler):", "",
              "| tensor | weights | bytes | vs fp32 | decode M weights/s |",
              "|---|---:|---:|---:|---:|"]
    for r in tensor_rows:
        lines.append(f"| {r['label']} | {r['n']:,} | {r['bytes']:,} | "
                     f"{4 * r['n'] / r['bytes']:.1f}x smaller | {r['n'] / r['dec_s'] / 1e6:.1f} |")
    lines += ["", "Targets: ANS within 0.5 % of n·H; decode >= 50 M weights/s."]
    return "\n".join(lines) + "\n"


def _c() -> bool:
    from dnnzip import kernels

    return kernels.load("ans") is not None


def _version(pkg: str) -> str:
    from importlib.metadata import version

    return version(pkg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200k weights, 3 repeats")
    ap.add_argument("--n", type=int, default=None, help="weights per stream (default 1M)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    args = ap.parse_args()
    args.n = args.n or (200_000 if args.quick else 1_000_000)
    args.repeats = args.repeats or (3 if args.quick else 7)
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass
    t0 = time.perf_counter()
    rows = {name: measure(s, a, b, args.repeats) for name, (s, a, b) in streams(args.n).items()}
    tensor_rows = tensors(args.n, args.repeats)
    text = render(rows, args, time.perf_counter() - t0, tensor_rows)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
