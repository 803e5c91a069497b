"""Sparse tensors as relative gaps between non-zero positions (Deep Compression, Sec. 2).

Han et al. (2016, survey ref. [35]) store a pruned layer in CSR/CSC form with *relative* indices:
the difference between consecutive non-zero positions, in ``b`` bits (8 for conv, 5 for fc
layers). A gap larger than ``2**b`` is bridged by *filler* entries: a zero value at the farthest
reachable position, so every stored gap lies in ``[1, 2**b]``. We flatten the tensor in C order
(one CSR row of the whole tensor), code ``gap - 1`` with the chosen entropy coder and store the
entry values (non-zeros and fillers) through a nested value encoding: ``raw`` / ``fp16`` or
``codebook`` (the shared-weight indices of stage 2).

Deviation: the paper bit-packs the gaps and Huffman-codes them afterwards; here the gap
alphabet is entropy-coded directly (same result, one step). Zero means bitwise zero, so ``-0.0``
is kept as an entry and the round trip stays bit-exact.
"""
from __future__ import annotations

import numpy as np

from dnnzip.artifact import coding
from dnnzip.artifact.encodings import (ConfigError, FormatError, _opts, encoding, get_encoding,
                                       meta_int, numel)

VALUE_ENCODINGS = ("raw", "fp16", "codebook")


def to_gaps(flat: np.ndarray, gap_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(gaps in [1, 2**gap_bits], entry index into ``flat`` or -1 for a filler)."""
    if flat.dtype.kind == "f":
        nz = np.flatnonzero(flat.view(f"u{flat.dtype.itemsize}"))
    else:
        nz = np.flatnonzero(flat)
    limit = 1 << gap_bits
    diffs = np.diff(nz, prepend=-1)
    fillers = (diffs - 1) // limit
    per = fillers + 1
    total = int(per.sum())
    gaps = np.full(total, limit, dtype=np.int64)
    where = np.full(total, -1, dtype=np.int64)
    real = np.cumsum(per) - 1
    gaps[real] = diffs - fillers * limit
    where[real] = nz
    return gaps, where


def from_gaps(gaps: np.ndarray, size: int) -> np.ndarray:
    """Flat positions of the entries; checks they stay inside a tensor of ``size`` elements."""
    positions = np.cumsum(gaps) - 1
    if len(positions) and positions[-1] >= size:
        raise FormatError(f"sparse gaps reach position {int(positions[-1])}, past the "
                          f"{size} elements of the tensor")
    return positions


@encoding("sparse")
class Sparse:
    """Non-zeros as entropy-coded relative gaps plus nested-encoded values.

    Options: ``gap_bits`` (max gap ``2**gap_bits``, 1..16, default 8), ``coder`` for the gaps and
    for codebook indices (ans | huffman | none, default ans), ``values`` (raw | fp16 | codebook,
    default raw), ``value_bits`` (codebook index width, default the smallest that fits).
    """

    lossless = True

    def encode(self, array: np.ndarray, **opts) -> tuple[dict, dict]:
        _opts("sparse", opts, ("gap_bits", "coder", "values", "value_bits"))
        gap_bits = opts.get("gap_bits", 8)
        if isinstance(gap_bits, bool) or not isinstance(gap_bits, int) or not 1 <= gap_bits <= 16:
            raise ConfigError(f"The 'gap_bits' option of encoding 'sparse' must be an int in "
                              f"[1, 16]. Got {gap_bits!r} instead.")
        coder = opts.get("coder", "ans")
        values_enc = opts.get("values", "raw")
        if values_enc not in VALUE_ENCODINGS:
            raise ConfigError(f"The 'values' option of encoding 'sparse' must be one of "
                              f"{', '.join(map(repr, VALUE_ENCODINGS))}. Got {values_enc!r} instead.")
        flat = np.ascontiguousarray(array).ravel()
        gaps, where = to_gaps(flat, gap_bits)
        values = np.zeros(len(gaps), dtype=flat.dtype)
        real = where >= 0
        values[real] = flat[where[real]]
        gstream, gmeta = coding.encode_symbols(gaps - 1, alphabet=1 << gap_bits, coder=coder,
                                               bits=gap_bits)
        vopts = {}
        if values_enc == "codebook":
            vopts = {"coder": coder, "bits": opts.get("value_bits")}
        vstreams, vmeta = get_encoding(values_enc).encode(values, **vopts)
        streams = {"gaps": gstream, **{f"values.{k}": v for k, v in vstreams.items()}}
        meta = {"gap_bits": gap_bits, "entries": len(gaps), "nonzero": int(real.sum()),
                "gaps": gmeta, "values": {"encoding": values_enc, "meta": vmeta}}
        return streams, meta

    def _values(self, meta: dict):
        v = meta.get("values")
        if not isinstance(v, dict) or v.get("encoding") not in VALUE_ENCODINGS \
                or not isinstance(v.get("meta"), dict):
            raise FormatError(f"sparse meta 'values' must name one of {', '.join(VALUE_ENCODINGS)}"
                              " with its meta")
        return get_encoding(v["encoding"]), v["meta"]

    def stream_names(self, meta: dict) -> set[str]:
        enc, vmeta = self._values(meta)
        return {"gaps"} | {f"values.{k}" for k in enc.stream_names(vmeta)}

    def decode(self, streams, meta, shape, dtype) -> np.ndarray:
        size = numel(shape)
        gap_bits = meta_int(meta, "gap_bits", 1, 16)
        entries = meta_int(meta, "entries", 0, size)
        enc, vmeta = self._values(meta)
        gmeta = meta.get("gaps")
        if not isinstance(gmeta, dict) or gmeta.get("alphabet") != 1 << gap_bits \
                or gmeta.get("bits") != gap_bits:
            raise FormatError(f"sparse gaps meta must code {1 << gap_bits} symbols of {gap_bits} bits")
        vstreams = {k[len("values."):]: v for k, v in streams.items() if k.startswith("values.")}
        values = enc.decode(vstreams, vmeta, [entries], dtype)
        gaps = coding.decode_symbols(streams["gaps"], gmeta, count=entries, max_bits=16) + 1
        positions = from_gaps(gaps, size)
        out = np.zeros(size, dtype=values.dtype)
        out[positions] = values
        return out.reshape(shape)
