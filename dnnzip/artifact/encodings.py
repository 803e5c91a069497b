"""How one tensor becomes byte streams: a registry of encodings and the built-in plain ones.

An encoding is a class registered with ``@encoding("name")`` offering

- ``encode(array, **opts) -> (streams: dict[str, bytes], meta: dict)``: ``array`` is a numpy
  array in the tensor's working dtype (see ``work_dtype``); stream names are local to the tensor;
  ``meta`` is JSON.
- ``decode(streams, meta, shape, dtype) -> np.ndarray``: ``streams`` maps the same local names to
  bytes read from a possibly hostile file, so every claim in ``meta`` is checked against the
  actual stream sizes before anything is allocated; errors are ``FormatError``.
- ``stream_names(meta) -> set[str]``: the local streams a tensor with this meta must have.

Built-ins here: ``raw`` (the dtype's little-endian bytes), ``fp16``, ``int8`` (affine, per output
channel: survey Eq. 15-16 with 8 bits; Jacob et al. 2018), ``bitpack`` (unsigned k-bit codes,
MSB first) and ``codebook`` (Deep Compression weight sharing: k-bit indices into a table of shared
values, entropy-coded by ``coding``). ``sparse`` lives in ``sparse.py``.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from dnnzip.artifact import coding
from dnnzip.errors import ConfigError, DataError, FormatError

# manifest dtype name -> numpy dtype of its bytes ("storage")
DTYPES: dict[str, str] = {
    "float32": "<f4", "float64": "<f8", "float16": "<f2", "bfloat16": "<i2",
    "int8": "i1", "uint8": "u1", "int16": "<i2", "int32": "<i4", "int64": "<i8", "bool": "|b1",
}
FLOATS = ("float32", "float64", "float16", "bfloat16")
INTEGERS = ("int8", "uint8", "int16", "int32", "int64", "bool")

_ENCODINGS: dict[str, Any] = {}


def encoding(name: str) -> Callable[[type], type]:
    """Class decorator registering an encoding under ``name`` (an instance is kept)."""

    def deco(cls: type) -> type:
        if name in _ENCODINGS and type(_ENCODINGS[name]) is not cls:
            raise ValueError(f"encoding {name!r} is already registered")
        cls.name = name
        _ENCODINGS[name] = cls()
        return cls

    return deco


def get_encoding(name: str) -> Any:
    import dnnzip.artifact.sparse  # noqa: F401  (registers "sparse")

    try:
        return _ENCODINGS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown encoding {name!r}; known encodings: "
                          f"{', '.join(sorted(_ENCODINGS))}") from None


def names() -> list[str]:
    get_encoding("raw")
    return sorted(_ENCODINGS)


def work_dtype(dtype: str, encoding_name: str) -> np.dtype:
    """The numpy dtype an encoding sees: the storage dtype, except bfloat16 outside ``raw``
    (numpy has no bfloat16; it is widened to float32 exactly)."""
    if dtype == "bfloat16" and encoding_name != "raw":
        return np.dtype("<f4")
    return np.dtype(DTYPES[dtype])


def numel(shape) -> int:
    return math.prod(shape)


def check_size(streams: dict, name: str, expected: int) -> bytes:
    buf = streams[name]
    if len(buf) != expected:
        raise FormatError(f"stream {name!r} has {len(buf)} bytes, expected {expected}")
    return buf


def meta_int(meta: dict, key: str, low: int, high: int) -> int:
    v = meta.get(key) if isinstance(meta, dict) else None
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise FormatError(f"meta {key!r} must be an int in [{low}, {high}], got {v!r}")
    return v


def _opts(name: str, opts: dict, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise ConfigError(f"encoding {name!r} has no option(s) {', '.join(map(repr, unknown))}; "
                          f"valid options are: {', '.join(allowed) or '(none)'}")


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise DataError(message)


@encoding("raw")
class Raw:
    """The tensor's bytes, little-endian, C order. Lossless for every dtype."""

    lossless = True

    def encode(self, array: np.ndarray, **opts) -> tuple[dict, dict]:
        _opts("raw", opts, ())
        return {"data": np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()}, {}

    def stream_names(self, meta: dict) -> set[str]:
        return {"data"}

    def decode(self, streams, meta, shape, dtype) -> np.ndarray:
        dt = work_dtype(dtype, "raw")
        buf = check_size(streams, "data", numel(shape) * dt.itemsize)
        if dtype == "bool":
            raw = np.frombuffer(buf, dtype=np.uint8)
            if (raw > 1).any():
                raise FormatError("bool stream holds bytes other than 0 and 1")
        return np.frombuffer(buf, dtype=dt).reshape(shape).copy()


@encoding("fp16")
class Fp16:
    """IEEE half precision (lossy unless the values are half-representable)."""

    lossless = False

    def encode(self, array: np.ndarray, **opts) -> tuple[dict, dict]:
        _opts("fp16", opts, ())
        _require(array.dtype.kind == "f", f"fp16 needs a float tensor, got {array.dtype}")
        with np.errstate(over="ignore"):
            half = array.astype("<f2")
        _require(bool(np.isfinite(half).all()),
                 "values exceed the float16 range (|x| > 65504); use raw or int8")
        return {"data": half.tobytes()}, {}

    def stream_names(self, meta: dict) -> set[str]:
        return {"data"}

    def decode(self, streams, meta, shape, dtype) -> np.ndarray:
        if dtype not in FLOATS:
            raise FormatError(f"fp16 encoding needs a float dtype, manifest says {dtype}")
        buf = check_size(streams, "data", numel(shape) * 2)
        return np.frombuffer(buf, dtype="<f2").astype(work_dtype(dtype, "fp16")).reshape(shape)


@encoding("int8")
class Int8:
    """Affine int8: ``x ~ (q - zero_point) * scale`` per output channel (axis 0) or per tensor.

    The range is widened to include 0 so that zero stays exact (pruned weights survive).
    Options: ``per_channel`` (default True), ``symmetric`` (zero_point 0, default False).
    """

    lossless = False

    def encode(self, array: np.ndarray, **opts) -> tuple[dict, dict]:
        _opts("int8", opts, ("per_channel", "symmetric"))
        _require(array.dtype.kind == "f", f"int8 needs a float tensor, got {array.dtype}")
        per_channel = bool(opts.get("per_channel", True)) and array.ndim >= 1 and array.shape[0] > 0
        symmetric = bool(opts.get("symmetric", False))
        x = array.astype(np.float64).reshape(array.shape[0] if per_channel else 1, -1)
        if x.shape[1] == 0:
            x = np.zeros((x.shape[0], 1))
        lo, hi = np.minimum(x.min(axis=1), 0.0), np.maximum(x.max(axis=1), 0.0)
        if symmetric:
            scale = np.maximum(-lo, hi) / 127.0
        else:
            scale = (hi - lo) / 255.0
        scale = np.where(scale > 0, scale, 1.0).astype("<f4")
        s64 = scale.astype(np.float64)[:, None]
        zp = np.zeros(len(scale)) if symmetric else np.clip(np.round(-128 - lo / s64[:, 0]), -128, 127)
        q = np.clip(np.round(x / s64) + zp[:, None], -128, 127).astype("i1")
        q = q.reshape(-1)[: array.size]
        meta = {"axis": 0 if per_channel else None, "symmetric": symmetric}
        return {"q": q.tobytes(), "scale": scale.tobytes(), "zero_point": zp.astype("i1").tobytes()}, meta

    def stream_names(self, meta: dict) -> set[str]:
        return {"q", "scale", "zero_point"}

    def decode(self, streams, meta, shape, dtype) -> np.ndarray:
        if dtype not in FLOATS:
            raise FormatError(f"int8 encoding needs a float dtype, manifest says {dtype}")
        axis = meta.get("axis")
        if axis not in (0, None) or isinstance(axis, bool) or (axis == 0 and not shape):
            raise FormatError(f"int8 meta 'axis' must be 0 or null, got {axis!r}")
        channels = shape[0] if axis == 0 else 1
        n = numel(shape)
        q = np.frombuffer(check_size(streams, "q", n), dtype="i1")
        scale = np.frombuffer(check_size(streams, "scale", 4 * channels), dtype="<f4")
        zp = np.frombuffer(check_size(streams, "zero_point", channels), dtype="i1")
        if not (np.isfinite(scale).all() and (scale > 0).all()):
            raise FormatError("int8 scales must be finite and positive")
        rows = q.reshape(channels, -1) if channels else q.reshape(0, 0)
        x = (rows.astype(np.float32) - zp.astype(np.float32)[:, None]) * scale[:, None]
        return x.reshape(shape).astype(work_dtype(dtype, "int8"))


@encoding("bitpack")
class Bitpack:
    """Unsigned ``bits``-bit integer codes (1..8) packed MSB first; binary weights use bits=1."""

    lossless = True

    def encode(self, array: np.ndarray, **opts) -> tuple[dict, dict]:
        _opts("bitpack", opts, ("bits",))
        bits = opts.get("bits")
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
            raise ConfigError(f"The 'bits' option of encoding 'bitpack' must be an int in [1, 8]. "
                              f"Got {bits!r} instead.")
        _require(array.dtype.kind in "biu", f"bitpack needs integer codes, got {array.dtype}")
        v = array.astype(np.int64).ravel()
        if v.size and (v.min() < 0 or v.max() >= 1 << bits):
            raise DataError(f"bitpack codes must be in [0, {1 << bits}); got "
                            f"[{v.min()}, {v.max()}]")
        return {"data": coding.pack_bits(v, bits)}, {"bits": bits, "count": int(v.size)}

    def stream_names(self, meta: dict) -> set[str]:
        return {"data"}

    def decode(self, streams, meta, shape, dtype) -> np.ndarray:
        if dtype not in INTEGERS:
            raise FormatError(f"bitpack needs an integer dtype, manifest says {dtype}")
        bits = meta_int(meta, "bits", 1, 8)
        n = numel(shape)
        if meta.get("count") != n:
            raise FormatError(f"bitpack meta 'count' is {meta.get('count')!r}, shape holds {n}")
        v = coding.unpack_bits(streams["data"], n, bits)
        if dtype == "bool" and bits > 1 and (v > 1).any() or dtype == "int8" and (v > 127).any():
            raise FormatError(f"bitpack codes do not fit dtype {dtype}")
        return v.astype(work_dtype(dtype, "bitpack")).reshape(shape)


def unique_bits(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values compared bit for bit (so -0.0 and 0.0 stay apart), sorted by value;
    returns (table, index of each element into it)."""
    if values.dtype.kind != "f":
        table, inv = np.unique(values, return_inverse=True)
        return table, inv.ravel()
    bits = values.view(f"u{values.dtype.itemsize}").ravel()
    ub, inv = np.unique(bits, return_inverse=True)
    table = ub.view(values.dtype)
    order = np.lexsort((ub, table))
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return table[order], rank[inv.ravel()]


@encoding("codebook")
class Codebook:
    """Shared weights (Deep Compression, survey ref. [35]): a table of at most ``2**bits``
    distinct values plus one index per weight, entropy-coded (``coder``: ans | huffman | none).

    Lossless: the table is the tensor's own distinct values, so cluster first (``share.kmeans``);
    a tensor with more than ``2**bits`` distinct values is a ``DataError``.
    Options: ``bits`` (index width, default the smallest that fits, at most 16), ``coder``.
    """

    lossless = True

    def encode(self, array: np.ndarray, **opts) -> tuple[dict, dict]:
        _opts("codebook", opts, ("bits", "coder"))
        coder = opts.get("coder", "ans")
        if coder not in coding.CODERS:
            raise ConfigError(f"The 'coder' option of encoding 'codebook' must be one of "
                              f"{', '.join(map(repr, coding.CODERS))}. Got {coder!r} instead.")
        table, idx = unique_bits(np.ascontiguousarray(array))
        k = max(1, len(table))
        bits = opts.get("bits") or max(1, math.ceil(math.log2(k)))
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
            raise ConfigError(f"The 'bits' option of encoding 'codebook' must be an int in "
                              f"[1, 16]. Got {bits!r} instead.")
        _require(len(table) <= 1 << bits,
                 f"tensor has {len(table)} distinct values, more than a {bits}-bit codebook "
                 f"holds ({1 << bits}); cluster it first (share.kmeans) or raise bits")
        if not len(table):
            table = np.zeros(1, dtype=array.dtype)
        stream, cmeta = coding.encode_symbols(idx, alphabet=len(table), coder=coder, bits=bits)
        streams = {"codebook": table.astype(table.dtype.newbyteorder("<")).tobytes(),
                   "indices": stream}
        return streams, {"size": len(table), "bits": bits, "indices": cmeta}

    def stream_names(self, meta: dict) -> set[str]:
        return {"codebook", "indices"}

    def decode(self, streams, meta, shape, dtype) -> np.ndarray:
        if dtype == "bool":
            raise FormatError("codebook cannot hold a bool tensor; use raw or bitpack")
        bits = meta_int(meta, "bits", 1, 16)
        size = meta_int(meta, "size", 1, 1 << bits)
        dt = work_dtype(dtype, "codebook")
        table = np.frombuffer(check_size(streams, "codebook", size * dt.itemsize), dtype=dt)
        cmeta = meta.get("indices")
        if not isinstance(cmeta, dict) or cmeta.get("alphabet") != size or cmeta.get("bits") != bits:
            raise FormatError(f"codebook indices meta must code {size} symbols of {bits} bits")
        idx = coding.decode_symbols(streams["indices"], cmeta, count=numel(shape), max_bits=16)
        if dt.kind == "f" and not np.isfinite(table).all():
            raise FormatError("codebook holds a NaN or infinite value")
        return table[idx].reshape(shape)
