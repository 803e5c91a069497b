"""A hand-written reader for the IDX format of (Fashion-)MNIST, parsed like an adversary wrote it.

IDX layout (LeCun et al., http://yann.lecun.com/exdb/mnist/): two zero bytes, a type code, the
number of dimensions ``d``, ``d`` big-endian uint32 sizes, then the data in C order. Every field
is checked against the bytes actually present, the decompressed size is capped, and trailing
bytes are rejected; errors are ``DataError`` naming the file and the problem.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from dnnzip.errors import DataError

# IDX type code -> numpy big-endian dtype
_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
           0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
MAX_BYTES = 1 << 30  # decompressed cap: 1 GiB (Fashion-MNIST train images are 47 MB)
MAX_DIMS = 8


def read_bytes(path: str | os.PathLike, *, max_bytes: int = MAX_BYTES) -> bytes:
    """The file's payload, gunzipped when it starts with the gzip magic, capped at ``max_bytes``."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            head = fh.read(2)
            fh.seek(0)
            if head == b"\x1f\x8b":
                with gzip.GzipFile(fileobj=fh) as gz:
                    data = gz.read(max_bytes + 1)
            else:
                data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise DataError(f"'{p}': file not found.") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"'{p}': not a readable gzip/IDX file ({exc}); "
                        f"re-download or reinstall the dataset.") from None
    if len(data) > max_bytes:
        raise DataError(f"'{p}': decompressed size exceeds the {max_bytes}-byte limit.")
    return data


def parse_idx(data: bytes, *, where: str = "<bytes>") -> np.ndarray:
    """Decode one IDX payload into a native-endian array of its stored shape."""
    if len(data) < 4:
        raise DataError(f"'{where}': {len(data)} bytes is too short for an IDX header "
                        f"(expected at least 4).")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in _DTYPES:
        raise DataError(f"'{where}': bad IDX magic number 0x{data[:4].hex()}; expected "
                        f"0x0000 followed by a type code in "
                        f"{{{', '.join(hex(c) for c in _DTYPES)}}}. Is this an IDX file?")
    if not 1 <= ndim <= MAX_DIMS:
        raise DataError(f"'{where}': IDX header declares {ndim} dimensions; "
                        f"expected 1 to {MAX_DIMS}.")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"'{where}': truncated IDX header: {len(data)} bytes, the {ndim} "
                        f"dimension sizes need {header}.")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _DTYPES[code]
    expected = dtype.itemsize
    for d in dims:  # Python ints: no overflow
        expected *= d
    got = len(data) - header
    if got < expected:
        raise DataError(f"'{where}': truncated: dimensions {dims} need {expected} data bytes, "
                        f"the file has {got}. Re-download the dataset.")
    if got > expected:
        raise DataError(f"'{where}': {got - expected} trailing bytes after the {dims} array; "
                        f"expected exactly {expected} data bytes.")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike, *, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """Read a (gzipped) IDX file."""
    return parse_idx(read_bytes(path, max_bytes=max_bytes), where=str(path))


def read_images_labels(images: str | os.PathLike, labels: str | os.PathLike,
                       *, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """An (N, H, W) uint8 image file and its (N,) label file, checked against each other."""
    x = read_idx(images)
    y = read_idx(labels)
    if x.ndim != 3 or x.dtype != np.uint8:
        raise DataError(f"'{images}': expected a 3-D uint8 image array (N, H, W), "
                        f"got {x.ndim}-D {x.dtype} of shape {x.shape}.")
    if y.ndim != 1 or y.dtype != np.uint8:
        raise DataError(f"'{labels}': expected a 1-D uint8 label array, "
                        f"got {y.ndim}-D {y.dtype} of shape {y.shape}.")
    if len(x) != len(y):
        raise DataError(f"'{labels}': {len(y)} labels for the {len(x)} images in '{images}'; "
                        f"expected one label per image (mismatched or truncated files).")
    if len(y) and int(y.max()) >= num_classes:
        raise DataError(f"'{labels}': label {int(y.max())} out of range; expected 0 to "
                        f"{num_classes - 1}.")
    return x, y


def write_idx(path: str | os.PathLike, array: np.ndarray, *, compress: bool = True) -> None:
    """Write ``array`` as IDX (gzipped by default); used for fixtures and tests."""
    array = np.asarray(array)
    code = {v.newbyteorder("="): k for k, v in _DTYPES.items()}.get(array.dtype.newbyteorder("="))
    if code is None:
        raise DataError(f"IDX cannot store dtype {array.dtype}.")
    payload = (struct.pack(">HBB", 0, code, array.ndim)
               + struct.pack(f">{array.ndim}I", *array.shape)
               + array.astype(_DTYPES[code]).tobytes())
    opener = gzip.open if compress else open
    with opener(path, "wb") as fh:
        fh.write(payload)
