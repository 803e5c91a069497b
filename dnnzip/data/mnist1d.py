"""MNIST-1D (Greydanus 2020): 10 classes of 40-sample 1-D signals, generated offline.

Uses the ``mnist1d`` package's ``make_dataset`` with its default arguments and seed (42), which
gives 4,000 train / 1,000 test signals, already centred to unit variance. The package seeds the
global ``random``/``numpy`` generators while generating; their state is restored afterwards.
Nothing is downloaded or written to disk (``get_dataset`` would do both).
"""
from __future__ import annotations

import random

import numpy as np

from dnnzip.data.bundle import DEFAULT_CALIB_SIZE, DEFAULT_VAL_FRACTION, DataBundle, make_bundle
from dnnzip.errors import DataError


def generate() -> dict:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise DataError("the 'mnist1d' source needs the mnist1d package: "
                        "pip install mnist1d") from None
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        return make_dataset(get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def load(*, seed: int = 0, limit: int | None = None, val_fraction: float = DEFAULT_VAL_FRACTION,
         calib_size: int = DEFAULT_CALIB_SIZE, **_: object) -> DataBundle:
    d = generate()
    x_tr = np.asarray(d["x"], dtype=np.float32)[:, None]
    x_te = np.asarray(d["x_test"], dtype=np.float32)[:, None]
    return make_bundle("mnist1d", x_tr, np.asarray(d["y"], dtype=np.int64), x_te,
                       np.asarray(d["y_test"], dtype=np.int64), seed=seed,
                       val_fraction=val_fraction, calib_size=calib_size, limit=limit,
                       num_classes=10, info={"source": "mnist1d.make_dataset (default args)"})
