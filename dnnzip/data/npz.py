"""``npz:PATH`` — arrays in a NumPy ``.npz`` file, loaded without unpickling.

Keys: ``x_train``/``y_train``/``x_test``/``y_test`` (optionally ``x_val``/``y_val``), or just
``x``/``y`` (20 % held out as test with a seeded permutation). ``x`` keeps its per-sample shape
(``(N, C, H, W)`` for images, ``(N, F)`` for features); uint8 inputs are scaled to [0, 1], other
numbers are used as they are. Labels are integer class ids starting at 0.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from dnnzip.data.bundle import (DEFAULT_CALIB_SIZE, DEFAULT_VAL_FRACTION, DataBundle, carve_test,
                                make_bundle)
from dnnzip.errors import DataError

TEST_FRACTION = 0.2


def _read(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"npz:'{path}': file not found; expected a .npz written by numpy.savez.")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"npz:'{path}': not a readable .npz without pickles ({exc}). Save plain "
                        f"numeric arrays with numpy.savez(path, x=..., y=...).") from None


def _inputs(x: np.ndarray, key: str, where: str) -> np.ndarray:
    if x.ndim < 2:
        raise DataError(f"{where}: '{key}' has shape {x.shape}; expected (N, ...) with at least "
                        f"one feature dimension.")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    if x.dtype.kind not in "iuf":
        raise DataError(f"{where}: '{key}' has dtype {x.dtype}; expected real numbers.")
    return x.astype(np.float32)


def _labels(y: np.ndarray, key: str, where: str) -> np.ndarray:
    if y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0):
        raise DataError(f"{where}: '{key}' holds non-integer values; expected class ids 0..K-1.")
    if y.dtype.kind not in "iuf":
        raise DataError(f"{where}: '{key}' has dtype {y.dtype}; expected integer class ids.")
    return y.astype(np.int64)


def load(path: str | os.PathLike, *, seed: int = 0, limit: int | None = None,
         val_fraction: float = DEFAULT_VAL_FRACTION, calib_size: int = DEFAULT_CALIB_SIZE,
         **_: object) -> DataBundle:
    p = Path(path)
    where = f"npz:'{p}'"
    arrays = _read(p)
    keys = set(arrays)
    if {"x_train", "y_train", "x_test", "y_test"} <= keys:
        x_tr = _inputs(arrays["x_train"], "x_train", where)
        y_tr = _labels(arrays["y_train"], "y_train", where)
        x_te = _inputs(arrays["x_test"], "x_test", where)
        y_te = _labels(arrays["y_test"], "y_test", where)
    elif {"x", "y"} <= keys:
        x_tr, y_tr, x_te, y_te = carve_test(_inputs(arrays["x"], "x", where),
                                            _labels(arrays["y"], "y", where),
                                            test_fraction=TEST_FRACTION, seed=seed, where=where)
    else:
        raise DataError(f"{where}: holds keys {sorted(keys)}; expected 'x' and 'y', or "
                        f"'x_train', 'y_train', 'x_test', 'y_test'.")
    val = None
    if {"x_val", "y_val"} <= keys:  # an explicit validation split replaces the carved one
        val = (_inputs(arrays["x_val"], "x_val", where), _labels(arrays["y_val"], "y_val", where))
    return make_bundle(p.stem, x_tr, y_tr, x_te, y_te, seed=seed, val_fraction=val_fraction,
                       calib_size=calib_size, limit=limit, where=where, val=val,
                       info={"source": str(p)})
