"""The ``.dnz`` container: a safetensors file of uint8 byte streams plus a JSON manifest.

Layout (safetensors): 8-byte little-endian header length ``N``, ``N`` bytes of JSON header, then
the data. Every tensor is a 1-D ``U8`` byte stream named ``<state_dict key>/<local stream>``; the
header's ``__metadata__`` holds the manifest::

    {"format": "dnz", "version": 2, "dnnzip_version": "...",
     "model": {"zoo": name, "kwargs": {...}} | {"builder": "pkg.mod:fn", ...} | {"template": ...},
     "structure": dnnzip.nn.spec.describe(model),
     "tensors": {key: {"dtype", "shape", "encoding", "meta", "streams": [names]}},
     "checksums": {stream: crc32}, "meta": {...caller's free JSON...}}

Version 2 (written now) stores that JSON zlib-compressed (level 9, with its Adler-32) and
base85-encoded in a stub ``{"format": "dnz", "version": 2, "z": "<base85>"}`` under
``__metadata__["dnnzip"]``, so that a version-1 reader refuses the file with its "newer than
this dnnzip supports; upgrade" message (base85 needs no JSON escapes; one metadata key keeps
the bytes deterministic, safetensors does not order several). A JSON string
inside the JSON header escapes every quote; compressed, the manifest takes ~1.6 KB instead of
~13 KB for a small CNN (the whole per-file overhead of the format, which decides the int8-vs-fp32
size ratio of small models). Version 1 files (the plain manifest under ``"dnnzip"``) stay
readable.

Writing goes through ``safetensors.numpy.save`` (sorted names, deterministic JSON manifest) and
an atomic replace. Reading does not trust the safetensors loader: the header is parsed here, like
an adversary wrote it (capped size, strict JSON, overflow-free offsets that tile the data exactly,
no trailing bytes, ``U8`` only), the compressed manifest is inflated under a size cap, and the
manifest is checked against the streams before a single tensor is decoded. Every failure is a
``FormatError`` naming the file and the key.
"""
from __future__ import annotations

import base64
import json
import math
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from dnnzip.artifact.encodings import DTYPES, get_encoding
from dnnzip.io import atomic_write  # noqa: F401  (re-exported)
from dnnzip.errors import ConfigError, FormatError

FORMAT = "dnz"
VERSION = 2
MAX_HEADER = 16 << 20
MAX_NDIM = 16
MAX_NUMEL = (1 << 31) - 1
MAX_DECODED_BYTES = 4 << 30      # whatever the file size
FREE_DECODED_BYTES = 64 << 20    # always allowed; beyond it, at most EXPANSION x the file size
EXPANSION = 1024                 # > what 99 % sparsity + codebooks reach; stops zip bombs
MANIFEST_KEY = "dnnzip"
COMPRESSED_KEY = "z"             # version >= 2: the stub's field holding zlib + base85
MAX_MANIFEST = 64 << 20          # inflated manifest cap (a 16 MB header could inflate 1000x)


def dumps(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no spaces, no NaN."""
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False,
                          ensure_ascii=True)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"artifact manifest must be plain JSON (numbers, strings, lists, "
                          f"dicts; no NaN): {exc}") from None


def _no_dupes(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _bad_constant(name):
    raise ValueError(f"non-standard JSON constant {name}")


def strict_loads(text: str, where: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_no_dupes, parse_constant=_bad_constant)
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"{where} is not valid JSON: {str(exc)[:200]}") from None


def write_container(path: str | os.PathLike, streams: dict[str, bytes], manifest: dict) -> int:
    """Write streams + manifest as a safetensors file atomically; returns bytes written."""
    from safetensors.numpy import save

    manifest = dict(manifest, checksums={k: zlib.crc32(v) for k, v in streams.items()})
    arrays = {k: np.frombuffer(v, dtype=np.uint8) for k, v in sorted(streams.items())}
    data = save(arrays, metadata=manifest_metadata(manifest))
    return atomic_write(path, data)


def manifest_metadata(manifest: dict) -> dict[str, str]:
    """The safetensors ``__metadata__`` holding ``manifest``: plain JSON for version 1, else the
    version stub with the compressed manifest (see the module docstring)."""
    text = dumps(manifest)
    if manifest.get("version", VERSION) < 2:
        return {MANIFEST_KEY: text}
    packed = base64.b85encode(zlib.compress(text.encode("ascii"), 9)).decode("ascii")
    return {MANIFEST_KEY: dumps({"format": FORMAT, "version": manifest["version"],
                                 COMPRESSED_KEY: packed})}


def _inflate(text: str, where: str) -> str:
    try:
        raw = base64.b85decode(text)
    except ValueError:
        raise FormatError(f"{where}: the compressed manifest is not base85 text; the file is "
                          "corrupt") from None
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(raw, MAX_MANIFEST + 1)
    except zlib.error as exc:
        raise FormatError(f"{where}: the compressed manifest does not inflate ({exc}); the "
                          "file is corrupt or was tampered with") from None
    if len(out) > MAX_MANIFEST or inflater.unconsumed_tail:
        raise FormatError(f"{where}: the compressed manifest inflates to more than "
                          f"{MAX_MANIFEST} bytes; refusing it")
    if not inflater.eof or inflater.unused_data:
        raise FormatError(f"{where}: the compressed manifest is truncated or has trailing "
                          "bytes; the file is corrupt")
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"{where}: the compressed manifest is not UTF-8") from None


def manifest_from_metadata(metadata: dict[str, str], where: str) -> tuple[Any, bool]:
    """(manifest, whether it was stored compressed); the manifest itself is not checked yet."""
    if MANIFEST_KEY not in metadata:
        raise FormatError(f"{where}: metadata has no {MANIFEST_KEY!r} key; this is a plain "
                          "safetensors file, not a .dnz artifact")
    key = f"{where}: metadata key {MANIFEST_KEY!r}"
    head = strict_loads(metadata[MANIFEST_KEY], key)
    if not isinstance(head, dict) or COMPRESSED_KEY not in head:
        return head, False
    if set(head) != {"format", "version", COMPRESSED_KEY} or head["format"] != FORMAT \
            or not _is_int(head["version"]) or head["version"] < 2 \
            or not isinstance(head[COMPRESSED_KEY], str):
        raise FormatError(f"{key} must be the stub {{\"format\": \"dnz\", \"version\": >= 2, "
                          f"\"{COMPRESSED_KEY}\": base85 text}}; got {metadata[MANIFEST_KEY][:80]!r}")
    if head["version"] > VERSION:
        raise FormatError(f"{where}: format version {head['version']} is newer than this dnnzip "
                          f"supports ({VERSION}); upgrade dnnzip to read it")
    manifest = strict_loads(_inflate(head[COMPRESSED_KEY], where), f"{key} (inflated)")
    if isinstance(manifest, dict) and manifest.get("version") != head["version"]:
        raise FormatError(f"{where}: the compressed manifest says version "
                          f"{manifest.get('version')!r}, its stub says {head['version']}")
    return manifest, True


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def parse_container(buf: bytes | memoryview, where: str) -> tuple[dict, dict[str, memoryview]]:
    """Parse safetensors bytes; returns (metadata, streams) after checking every offset."""
    buf = memoryview(buf)
    if len(buf) < 8:
        raise FormatError(f"{where}: file is {len(buf)} bytes, too short for a header length")
    n = int.from_bytes(buf[:8], "little")
    if n > MAX_HEADER:
        raise FormatError(f"{where}: header length {n} exceeds the {MAX_HEADER}-byte limit")
    if n > len(buf) - 8:
        raise FormatError(f"{where}: header length {n} runs past the end of the "
                          f"{len(buf)}-byte file; the file is truncated")
    try:
        text = bytes(buf[8:8 + n]).decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"{where}: header is not UTF-8") from None
    header = strict_loads(text, f"{where}: header")
    if not isinstance(header, dict):
        raise FormatError(f"{where}: header must be a JSON object, got {type(header).__name__}")
    metadata = header.pop("__metadata__", None)
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise FormatError(f"{where}: header key '__metadata__' must be an object of strings; "
                          "this is not a .dnz artifact")
    data_len = len(buf) - 8 - n
    spans = []
    for key, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise FormatError(f"{where}: tensor {key!r} must have exactly dtype, shape, "
                              "data_offsets")
        if entry["dtype"] != "U8":
            raise FormatError(f"{where}: tensor {key!r} has dtype {entry['dtype']!r}; a .dnz "
                              "artifact stores only U8 byte streams")
        shape, offs = entry["shape"], entry["data_offsets"]
        if not (isinstance(shape, list) and len(shape) == 1 and _is_int(shape[0])
                and isinstance(offs, list) and len(offs) == 2 and all(map(_is_int, offs))):
            raise FormatError(f"{where}: tensor {key!r} must be 1-D with two integer offsets")
        start, end = offs
        if not 0 <= start <= end <= data_len:
            raise FormatError(f"{where}: tensor {key!r} offsets [{start}, {end}] fall outside "
                              f"the {data_len}-byte data section")
        if end - start != shape[0]:
            raise FormatError(f"{where}: tensor {key!r} spans {end - start} bytes but its shape "
                              f"claims {shape[0]}")
        spans.append((start, end, key))
    spans.sort()
    cursor = 0
    for start, end, key in spans:
        if start != cursor:
            kind = "overlaps the previous tensor" if start < cursor else "leaves a hole before it"
            raise FormatError(f"{where}: tensor {key!r} starts at byte {start} and {kind} "
                              f"(expected {cursor})")
        cursor = end
    if cursor != data_len:
        raise FormatError(f"{where}: {data_len - cursor} trailing bytes after the last tensor")
    base = 8 + n
    return metadata, {key: buf[base + s:base + e] for s, e, key in spans}


def check_manifest(manifest: Any, sizes: dict[str, int], where: str, file_size: int = 0,
                   compressed: bool | None = None) -> dict:
    """Validate the manifest schema against the stream sizes; returns it unchanged.

    The decoded size is capped before anything is decoded: at most ``MAX_DECODED_BYTES``, and
    beyond ``FREE_DECODED_BYTES`` at most ``EXPANSION`` times the file size, so a small file cannot
    claim gigabytes of zeros.
    """
    limit = min(MAX_DECODED_BYTES, max(FREE_DECODED_BYTES, EXPANSION * file_size))
    if not isinstance(manifest, dict):
        raise FormatError(f"{where}: manifest must be a JSON object")
    if manifest.get("format") != FORMAT:
        raise FormatError(f"{where}: manifest key 'format' is {manifest.get('format')!r}, "
                          f"expected {FORMAT!r}; this is not a .dnz artifact")
    version = manifest.get("version")
    if not _is_int(version) or version < 1:
        raise FormatError(f"{where}: manifest key 'version' must be a positive int, got {version!r}")
    if version > VERSION:
        raise FormatError(f"{where}: format version {version} is newer than this dnnzip "
                          f"supports ({VERSION}); upgrade dnnzip to read it")
    if compressed is not None and compressed != (version >= 2):
        raise FormatError(f"{where}: a version-{version} manifest must be stored "
                          f"{'compressed' if version >= 2 else 'plain'}; the file is damaged or "
                          "was written by another dnnzip: upgrade dnnzip or re-pack the model")
    for key, kind in (("model", dict), ("structure", dict), ("tensors", dict), ("meta", dict),
                      ("checksums", dict), ("dnnzip_version", str)):
        if not isinstance(manifest.get(key), kind):
            raise FormatError(f"{where}: manifest key {key!r} must be a JSON {kind.__name__}")
    owner: dict[str, str] = {}
    decoded = 0
    for name, t in manifest["tensors"].items():
        decoded += _check_tensor(name, t, sizes, owner, where)
        if decoded > limit:
            raise FormatError(f"{where}: tensors decode to more than {limit} bytes (at key "
                              f"'tensors.{name}'), too much for a {file_size}-byte file; "
                              "refusing to allocate that much")
    orphans = sorted(set(sizes) - set(owner))
    if orphans:
        raise FormatError(f"{where}: stream {orphans[0]!r} is not used by any tensor")
    checks = manifest["checksums"]
    if set(checks) != set(sizes) or not all(_is_int(v) for v in checks.values()):
        raise FormatError(f"{where}: manifest key 'checksums' must give one integer per stream")
    return manifest


def _check_tensor(name: str, t: Any, sizes: dict, owner: dict, where: str) -> int:
    key = f"tensors.{name}"
    if not isinstance(t, dict) or set(t) != {"dtype", "shape", "encoding", "meta", "streams"}:
        raise FormatError(f"{where}: key {key!r} must have exactly dtype, shape, encoding, meta, "
                          "streams")
    if not isinstance(t["dtype"], str) or t["dtype"] not in DTYPES:
        raise FormatError(f"{where}: key '{key}.dtype' is {t['dtype']!r}; supported dtypes: "
                          f"{', '.join(DTYPES)}")
    shape = t["shape"]
    if not (isinstance(shape, list) and len(shape) <= MAX_NDIM
            and all(_is_int(d) and 0 <= d <= MAX_NUMEL for d in shape)):
        raise FormatError(f"{where}: key '{key}.shape' must be a list of at most {MAX_NDIM} "
                          f"non-negative ints, got {str(shape)[:80]}")
    count = math.prod(shape)
    if count > MAX_NUMEL:
        raise FormatError(f"{where}: key '{key}.shape' {shape} holds {count} elements, more "
                          f"than the {MAX_NUMEL} limit")
    if not isinstance(t["meta"], dict):
        raise FormatError(f"{where}: key '{key}.meta' must be an object")
    try:
        if not isinstance(t["encoding"], str):
            raise ConfigError("encoding name must be a string")
        enc = get_encoding(t["encoding"])
    except ConfigError:
        raise FormatError(f"{where}: tensor {name!r} uses unknown encoding {t['encoding']!r}; "
                          "it was written by a newer dnnzip or a plug-in: upgrade or import "
                          "the plug-in") from None
    try:
        local = enc.stream_names(t["meta"])
    except FormatError as exc:
        raise FormatError(f"{where}: tensor {name!r} ({t['encoding']}): {exc}") from None
    expected = {f"{name}/{s}" for s in local}
    listed = t["streams"]
    if not isinstance(listed, list) or not all(isinstance(x, str) for x in listed) \
            or set(listed) != expected or len(listed) != len(expected):
        raise FormatError(f"{where}: key '{key}.streams' must list {sorted(expected)}, got "
                          f"{str(listed)[:200]}")
    for s in listed:
        if s not in sizes:
            raise FormatError(f"{where}: tensor {name!r} needs stream {s!r}, which the file lacks")
        if s in owner:
            raise FormatError(f"{where}: stream {s!r} is claimed by {owner[s]!r} and {name!r}")
        owner[s] = name
    itemsize = max(4, np.dtype(DTYPES[t["dtype"]]).itemsize)
    return count * itemsize


def read_container(path: str | os.PathLike) -> tuple[dict, dict[str, memoryview]]:
    """Read and validate ``path``; returns (manifest, streams). Streams are checksummed."""
    where = f"'{path}'"
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise FormatError(f"{where}: cannot read the artifact: {exc.strerror or exc}") from None
    metadata, streams = parse_container(data, where)
    manifest, compressed = manifest_from_metadata(metadata, where)
    check_manifest(manifest, {k: len(v) for k, v in streams.items()}, where, len(data),
                   compressed)
    for k, v in streams.items():
        if zlib.crc32(v) != manifest["checksums"][k]:
            raise FormatError(f"{where}: stream {k!r} fails its CRC-32 check; the file is "
                              "corrupt or was tampered with")
    return manifest, streams


def decode_tensor(name: str, entry: dict, streams: dict[str, memoryview], where: str) -> np.ndarray:
    """Decode one validated manifest entry; any failure becomes a FormatError naming it."""
    enc = get_encoding(entry["encoding"])
    local = {s[len(name) + 1:]: streams[s] for s in entry["streams"]}
    try:
        out = enc.decode(local, entry["meta"], list(entry["shape"]), entry["dtype"])
    except FormatError as exc:
        raise FormatError(f"{where}: tensor {name!r} ({entry['encoding']}): {exc}") from None
    except (ValueError, TypeError, IndexError, KeyError, OverflowError, MemoryError) as exc:
        raise FormatError(f"{where}: tensor {name!r} ({entry['encoding']}) cannot be decoded: "
                          f"{type(exc).__name__}: {str(exc)[:200]}") from exc
    if list(out.shape) != list(entry["shape"]):
        raise FormatError(f"{where}: tensor {name!r} decoded to shape {list(out.shape)}, "
                          f"manifest says {entry['shape']}")
    return out
