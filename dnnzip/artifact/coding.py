"""Entropy coding of integer symbol streams: ANS (default), canonical Huffman, or plain k-bit.

Deep Compression (Han et al. 2016, survey ref. [35]) Huffman-codes the shared-weight indices and
the sparse-position gaps after pruning and clustering (its Fig. 1, stage 3). Huffman spends a
whole number of bits per symbol; ANS (Duda et al. 2015) reaches the empirical entropy ``n*H`` to
within a few words, so ANS is the default and Huffman the paper-faithful option.

Every coded stream is self-describing given its JSON meta:

- ``ans``: the exact symbol counts up to the last present symbol (``table`` LEB128 varints)
  followed by the ``constriction`` AnsCoder words (uint32 LE). The categorical model is rebuilt
  from the counts, so encoder and decoder use bit-identical models. Decoding runs in the C
  kernel ``dnnzip/kernels/ans.c`` when a compiler is available: the same rANS steps and the same
  24-bit CDF (``ans_cdf``), so it returns constriction's symbols and verdicts bit for bit, with a
  bucketed symbol search instead of constriction's binary search (about 2x the throughput);
  without a compiler, constriction decodes.
- ``huffman``: the code lengths up to the last present symbol (``table`` entries, 5 bits each,
  0 = absent), then ``lanes`` lane lengths in bits (varints, minus ``lane_base``), then the bits,
  MSB first. Symbol ``i`` lives in lane ``i % lanes``;
  lanes are decoded in lock step with a table of ``2**max_len`` entries, so numpy does the work
  (zstd's Huff0 splits its stream into lanes for the same reason). Lengths are limited to 16.
- ``none``: ``bits``-bit codes packed MSB first.

Decoders treat the bytes as hostile: sizes are checked before anything is allocated, counts must
add up, a stream shorter than its entropy lower bound is refused before decoding, and a stream with
bits left over (or missing) after decoding is refused. Errors are ``FormatError`` without the file
or tensor name; the container adds both.
"""
from __future__ import annotations

import ctypes
import heapq
import math

import numpy as np

from dnnzip.errors import FormatError

CODERS = ("ans", "huffman", "none")
MAX_HUFFMAN_LEN = 16
MAX_ALPHABET = 1 << 16
ANS_PRECISION = 24  # constriction's default Categorical model
_INVALID_STEP = 1 << 40  # a Huffman table miss pushes a lane far past its end


def entropy_bits(counts: np.ndarray) -> float:
    """Empirical Shannon information ``n * H`` in bits of a symbol histogram."""
    c = counts[counts > 0].astype(np.float64)
    n = c.sum()
    return float((c * np.log2(n / c)).sum()) if n > 0 else 0.0


def _uint(meta: dict, key: str, low: int, high: int) -> int:
    v = meta.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise FormatError(f"coded stream meta {key!r} must be an int in [{low}, {high}], got {v!r}")
    return v


# ----------------------------------------------------------------------------- bit packing
def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Unsigned ``bits``-bit codes, MSB first, zero-padded to a whole byte."""
    v = np.ascontiguousarray(values, dtype=np.uint32).ravel()
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint32)
    matrix = ((v[:, None] >> shifts) & 1).astype(np.uint8)
    return np.packbits(matrix.ravel()).tobytes()


def unpack_bits(buf, count: int, bits: int) -> np.ndarray:
    """Inverse of ``pack_bits``; checks the size and that the padding bits are zero."""
    need = (count * bits + 7) // 8
    if len(buf) != need:
        raise FormatError(f"{bits}-bit stream of {count} codes needs {need} bytes, has {len(buf)}")
    flat = np.unpackbits(np.frombuffer(buf, dtype=np.uint8))
    if flat[count * bits:].any():
        raise FormatError(f"{bits}-bit stream has non-zero padding bits")
    matrix = flat[: count * bits].reshape(count, bits).astype(np.uint32)
    weights = (np.uint32(1) << np.arange(bits - 1, -1, -1, dtype=np.uint32))
    return matrix @ weights


# ----------------------------------------------------------------------------- varints
def pack_varints(values: np.ndarray) -> bytes:
    """LEB128 unsigned varints (7 bits per byte, high bit = more follows), values < 2**35."""
    v = np.ascontiguousarray(values, dtype=np.int64).ravel()
    if not len(v):
        return b""
    groups = (v[:, None] >> (7 * np.arange(5, dtype=np.int64))) & 0x7F
    nbytes = 1 + (np.maximum(v, 1).astype(np.float64) >= 2.0 ** (7 * np.arange(1, 5))[:, None]).T.sum(1)
    nbytes = np.where(v == 0, 1, nbytes)
    keep = np.arange(5)[None, :] < nbytes[:, None]
    more = np.arange(5)[None, :] < (nbytes - 1)[:, None]
    return (groups | (more << 7))[keep].astype(np.uint8).tobytes()


def unpack_varints(buf, count: int) -> tuple[np.ndarray, int]:
    """The first ``count`` varints of ``buf`` and the bytes they use; refuses overlong ones."""
    raw = np.frombuffer(buf, dtype=np.uint8, count=min(len(buf), 5 * count))
    ends = np.flatnonzero(raw < 0x80)
    if len(ends) < count:
        raise FormatError(f"table of {count} varints runs past the end of the stream")
    if count == 0:
        return np.zeros(0, dtype=np.int64), 0
    used = int(ends[count - 1]) + 1
    group = np.concatenate([[0], np.cumsum(raw[: used - 1] < 0x80)])
    starts = np.concatenate([[0], ends[: count - 1] + 1])
    pos = np.arange(used) - starts[group]
    if pos.max() >= 5:
        raise FormatError("varint longer than 5 bytes in a coded-stream table")
    vals = np.zeros(count, dtype=np.int64)
    np.add.at(vals, group, (raw[:used] & 0x7F).astype(np.int64) << (7 * pos))
    return vals, used


# ----------------------------------------------------------------------------- ANS
def _ans_model(counts_present: np.ndarray):
    import constriction

    return constriction.stream.model.Categorical(counts_present.astype(np.float64), perfect=False)


def _table_len(counts: np.ndarray) -> int:
    nz = np.flatnonzero(counts)
    return int(nz[-1]) + 1 if len(nz) else 0


def _ans_encode(symbols: np.ndarray, alphabet: int) -> tuple[bytes, dict]:
    import constriction

    counts = np.bincount(symbols, minlength=alphabet).astype(np.int64)
    present = np.flatnonzero(counts)
    words = b""
    if len(present) > 1:
        rank = np.zeros(alphabet, dtype=np.int32)
        rank[present] = np.arange(len(present), dtype=np.int32)
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(rank[symbols], _ans_model(counts[present]))
        words = coder.get_compressed().astype("<u4").tobytes()
    size = _table_len(counts)
    table = pack_varints(counts[:size])
    return table + words, {"table": size, "model_bits": 8 * len(table)}


def _ans_decode(buf, meta: dict, count: int, alphabet: int) -> np.ndarray:
    import constriction

    size = _uint(meta, "table", 0, alphabet)
    head, used = unpack_varints(buf, size)
    if (len(buf) - used) % 4:
        raise FormatError(f"ANS stream of {len(buf)} bytes is not a {used}-byte histogram plus "
                          "whole 32-bit words; it is truncated or tampered")
    counts = np.zeros(alphabet, dtype=np.int64)
    counts[:size] = head
    if int(counts.sum()) != count:
        raise FormatError(f"ANS histogram counts {int(counts.sum())} symbols, expected {count}")
    words = np.frombuffer(buf, dtype="<u4", offset=used).astype(np.uint32)
    present = np.flatnonzero(counts)
    if len(present) <= 1:
        if len(words):
            raise FormatError("ANS stream of a single repeated symbol must carry no words")
        return np.full(count, present[0] if len(present) else 0, dtype=np.int64)
    bound = entropy_bits(counts)
    if 32 * len(words) < bound - 64:
        raise FormatError(f"ANS stream holds {32 * len(words)} bits but its histogram needs at "
                          f"least {bound:.0f}; it is truncated")
    out = _ans_decode_c(words, counts[present], None if len(present) == alphabet else present,
                        count)
    if out is not None:
        return out
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        ranks = coder.decode(_ans_model(counts[present]), count)
    except (ValueError, RuntimeError) as exc:
        raise FormatError(f"ANS stream is invalid: {exc}") from None
    if not coder.is_empty():
        raise FormatError("ANS stream has data left after the last symbol; it is tampered")
    return ranks if len(present) == alphabet else present[ranks]


def ans_cdf(counts_present: np.ndarray) -> np.ndarray:
    """The 24-bit CDF of ``Categorical(counts, perfect=False)`` (constriction's
    ``fast_quantized_cdf``): ``cdf[i] = floor(C_i * (2^24 - n) / total) + i`` with ``C_i`` the
    counts before ``i``, then ``2^24``. Counts are integers, so every sum is exact and the one
    product rounds as in Rust; the result is the model constriction builds, bit for bit."""
    p = np.asarray(counts_present, dtype=np.float64)
    n = len(p)
    scale = float((1 << ANS_PRECISION) - n) / float(p.sum())
    before = np.concatenate([[0.0], np.cumsum(p[:-1])])
    cdf = (before * scale).astype(np.uint32) + np.arange(n, dtype=np.uint32)
    return np.concatenate([cdf, np.array([1 << ANS_PRECISION], dtype=np.uint32)])


def _ans_decode_c(words: np.ndarray, counts_present: np.ndarray, symbol_map, count: int):
    """Decode with the C kernel (``dnnzip/kernels/ans.c``); None when C is unavailable."""
    from dnnzip import kernels

    lib = kernels.load("ans")
    if lib is None or not 2 <= len(counts_present) < (1 << ANS_PRECISION) - 1:
        return None
    cdf = ans_cdf(counts_present)
    out = np.empty(count, dtype=np.int64)
    smap = None if symbol_map is None else np.ascontiguousarray(symbol_map, dtype=np.int64)
    words = np.ascontiguousarray(words, dtype=np.uint32)
    rc = lib.dz_ans_decode(kernels.ptr(words), ctypes.c_int64(len(words)), kernels.ptr(cdf),
                           ctypes.c_int32(len(counts_present)),
                           None if smap is None else kernels.ptr(smap), ctypes.c_int64(count),
                           kernels.ptr(out))
    if rc == -1:
        raise FormatError("ANS stream is invalid: its last word is zero")
    if rc == -2:
        raise MemoryError("ANS decoder could not allocate its search table")
    if rc != 0:
        raise FormatError("ANS stream has data left after the last symbol; it is tampered")
    return out


# ----------------------------------------------------------------------------- Huffman
def huffman_lengths(counts: np.ndarray, max_len: int = MAX_HUFFMAN_LEN) -> np.ndarray:
    """Huffman code lengths (0 for absent symbols), limited to ``max_len`` bits.

    Ties are broken by symbol so the result is deterministic. Over-long codes are clamped and the
    Kraft sum repaired by lengthening the longest codes still below the limit.
    """
    lengths = np.zeros(len(counts), dtype=np.int64)
    present = [int(s) for s in np.flatnonzero(counts)]
    if len(present) == 1:
        lengths[present[0]] = 1
    if len(present) <= 1:
        return lengths
    heap = [(int(counts[s]), s, (s,)) for s in present]
    heapq.heapify(heap)
    order = len(counts)
    while len(heap) > 1:
        c1, _, a = heapq.heappop(heap)
        c2, _, b = heapq.heappop(heap)
        for s in a + b:
            lengths[s] += 1
        heapq.heappush(heap, (c1 + c2, order, a + b))
        order += 1
    if lengths.max() > max_len:
        lengths[lengths > max_len] = max_len
        kraft = int(sum(1 << (max_len - int(l)) for l in lengths[lengths > 0]))
        while kraft > 1 << max_len:
            cand = [s for s in present if lengths[s] < max_len]
            s = max(cand, key=lambda t: (lengths[t], -counts[t], t))
            kraft -= 1 << (max_len - int(lengths[s]) - 1)
            lengths[s] += 1
    return lengths


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical prefix codes for the given lengths (symbols sorted by (length, symbol))."""
    codes = np.zeros(len(lengths), dtype=np.int64)
    code, prev = 0, 0
    for s in sorted(np.flatnonzero(lengths), key=lambda t: (lengths[t], t)):
        code <<= int(lengths[s]) - prev
        prev = int(lengths[s])
        codes[s] = code
        code += 1
    return codes


SYMBOLS_PER_LANE = 1024


def lanes_for(count: int) -> int:
    """Number of interleaved Huffman lanes: about 1024 symbols per lane, at most 4096 lanes."""
    return max(1, min(4096, count // SYMBOLS_PER_LANE))


def _lane_order(count: int, lanes: int) -> np.ndarray:
    rounds = -(-count // lanes)
    idx = np.arange(rounds * lanes, dtype=np.int64).reshape(rounds, lanes).T.ravel()
    return idx[idx < count]


def _huffman_encode(symbols: np.ndarray, alphabet: int) -> tuple[bytes, dict]:
    count = len(symbols)
    lengths = huffman_lengths(np.bincount(symbols, minlength=alphabet))
    codes = canonical_codes(lengths)
    lanes = lanes_for(count)
    seq = symbols[_lane_order(count, lanes)]
    lens, vals = lengths[seq], codes[seq]
    lane_of = np.arange(count, dtype=np.int64) % lanes
    lane_bits = np.bincount(lane_of, weights=lengths[symbols], minlength=lanes).astype(np.int64)
    lane_base = int(lane_bits.min(initial=0))
    owner = np.repeat(np.arange(count, dtype=np.int64), lens)
    starts = np.cumsum(lens) - lens
    k = np.arange(len(owner), dtype=np.int64) - starts[owner]
    bits = ((vals[owner] >> (lens[owner] - 1 - k)) & 1).astype(np.uint8)
    size = _table_len(lengths)
    head = pack_bits(lengths[:size], 5) + pack_varints(lane_bits - lane_base)
    return head + np.packbits(bits).tobytes(), {"lanes": lanes, "lane_base": lane_base,
                                                "table": size, "model_bits": 8 * len(head)}


def _huffman_table(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    max_len = int(lengths.max())
    present = np.flatnonzero(lengths)
    if sum(2.0 ** -int(lengths[s]) for s in present) > 1.0:
        raise FormatError("Huffman code lengths violate the Kraft inequality; tampered table")
    codes = canonical_codes(lengths)
    span = (1 << (max_len - lengths[present])).astype(np.int64)
    first = codes[present] << (max_len - lengths[present])
    sym = np.zeros(1 << max_len, dtype=np.int64)
    step = np.full(1 << max_len, _INVALID_STEP, dtype=np.int64)
    slots = np.repeat(first, span) + (np.arange(span.sum()) - np.repeat(np.cumsum(span) - span, span))
    sym[slots] = np.repeat(present, span)
    step[slots] = np.repeat(lengths[present], span)
    return sym, step, max_len


def _huffman_decode(buf, meta: dict, count: int, alphabet: int) -> np.ndarray:
    lanes = _uint(meta, "lanes", 1, 4096)
    if lanes != lanes_for(count):
        raise FormatError(f"Huffman stream claims {lanes} lanes, {count} symbols use "
                          f"{lanes_for(count)}")
    size = _uint(meta, "table", 0, alphabet)
    base = _uint(meta, "lane_base", 0, MAX_HUFFMAN_LEN * count)
    nlen = (5 * size + 7) // 8
    if len(buf) < nlen:
        raise FormatError(f"Huffman stream of {len(buf)} bytes is shorter than its code-length "
                          "table; it is truncated")
    lengths = np.zeros(alphabet, dtype=np.int64)
    lengths[:size] = unpack_bits(bytes(buf[:nlen]), size, 5)
    dev, used = unpack_varints(buf[nlen:], lanes)
    lane_bits = dev + base
    payload = np.frombuffer(buf, dtype=np.uint8, offset=nlen + used)
    if count == 0:
        if lengths.any() or lane_bits.any() or len(payload):
            raise FormatError("empty Huffman stream carries data")
        return np.zeros(0, dtype=np.int64)
    if lengths.max() > MAX_HUFFMAN_LEN or not lengths.any():
        raise FormatError(f"Huffman code lengths must be in 1..{MAX_HUFFMAN_LEN} for at least "
                          "one symbol")
    sym, step, max_len = _huffman_table(lengths)
    total = int(lane_bits.sum())
    if (total + 7) // 8 != len(payload):
        raise FormatError(f"Huffman lanes claim {total} bits but the payload has {len(payload)} "
                          "bytes; it is truncated or tampered")
    per_lane = np.bincount(np.arange(count) % lanes, minlength=lanes)
    used_lengths = lengths[lengths > 0]
    if (lane_bits < per_lane * used_lengths.min()).any() \
            or (lane_bits > per_lane * used_lengths.max()).any():
        raise FormatError("Huffman lane lengths are inconsistent with the symbol count")
    padded = np.concatenate([payload, np.zeros(3, dtype=np.uint8)]).astype(np.uint32)
    w24 = (padded[:-2] << 16) | (padded[1:-1] << 8) | padded[2:]
    last = len(w24) - 1
    ends = np.cumsum(lane_bits)
    pos = ends - lane_bits
    rounds = -(-count // lanes)
    out = np.empty((rounds, lanes), dtype=np.int64)
    shift, mask = 24 - max_len, (1 << max_len) - 1
    for t in range(rounds):
        live = min(lanes, count - t * lanes)
        p = pos if live == lanes else pos[:live]
        window = (w24[np.minimum(p >> 3, last)] >> (shift - (p & 7))) & mask
        out[t, :live] = sym[window]
        p += step[window]
    if not np.array_equal(pos, ends):
        raise FormatError("Huffman stream does not decode to its lane boundaries; it is "
                          "tampered or truncated")
    return out.ravel()[:count]


# ----------------------------------------------------------------------------- public API
def encode_symbols(symbols: np.ndarray, *, alphabet: int, coder: str, bits: int) -> tuple[bytes, dict]:
    """Code integer symbols in ``[0, alphabet)``; returns (stream, meta).

    ``bits`` is the plain code width (``coder="none"``) and bounds ``alphabet <= 2**bits``.
    The meta records ``symbols``, ``entropy_bits`` (n*H) and ``coded_bits`` (whole stream).
    """
    if coder not in CODERS:
        raise ValueError(f"coder must be one of {CODERS}, got {coder!r}")
    symbols = np.ascontiguousarray(symbols, dtype=np.int64).ravel()
    if not 1 <= alphabet <= min(MAX_ALPHABET, 1 << bits):
        raise ValueError(f"alphabet {alphabet} out of range for {bits}-bit codes")
    if len(symbols) and (symbols.min() < 0 or symbols.max() >= alphabet):
        raise ValueError("symbol out of alphabet")
    counts = np.bincount(symbols, minlength=alphabet)
    if coder == "ans":
        stream, extra = _ans_encode(symbols, alphabet)
    elif coder == "huffman":
        stream, extra = _huffman_encode(symbols, alphabet)
    else:
        stream, extra = pack_bits(symbols, bits), {}
    meta = {"coder": coder, "alphabet": alphabet, "bits": bits, "symbols": len(symbols),
            "entropy_bits": round(entropy_bits(counts), 3), "coded_bits": 8 * len(stream), **extra}
    return stream, meta


def decode_symbols(buf, meta: dict, *, count: int, max_bits: int = 16) -> np.ndarray:
    """Decode a coded stream of ``count`` symbols; every claim in ``meta`` is checked."""
    if not isinstance(meta, dict):
        raise FormatError(f"coded stream meta must be an object, got {type(meta).__name__}")
    coder = meta.get("coder")
    if coder not in CODERS:
        raise FormatError(f"unknown coder {coder!r}; expected one of {', '.join(CODERS)}")
    bits = _uint(meta, "bits", 1, max_bits)
    alphabet = _uint(meta, "alphabet", 1, 1 << bits)
    if meta.get("symbols") != count:
        raise FormatError(f"coded stream claims {meta.get('symbols')!r} symbols, expected {count}")
    if meta.get("coded_bits") != 8 * len(buf):
        raise FormatError(f"coded stream is {8 * len(buf)} bits, meta claims "
                          f"{meta.get('coded_bits')!r}")
    if coder == "ans":
        return _ans_decode(buf, meta, count, alphabet)
    if coder == "huffman":
        return _huffman_decode(buf, meta, count, alphabet)
    out = unpack_bits(buf, count, bits)
    if len(out) and int(out.max()) >= alphabet:
        raise FormatError(f"decoded symbol {int(out.max())} is outside the alphabet of {alphabet}")
    return out


def shannon_gap(meta: dict) -> float:
    """Relative distance of a coded stream to its Shannon bound (0.004 = 0.4 % above)."""
    h = meta.get("entropy_bits") or 0.0
    return (meta["coded_bits"] / h - 1.0) if h > 0 else math.inf
