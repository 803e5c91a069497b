"""scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), shipped with sklearn.

There is no official test split: 20 % is held out with a seeded permutation. Pixels (0..16) are
scaled to [0, 1] and standardised with the fixed mean/std below.
"""
from __future__ import annotations

import numpy as np

from dnnzip.data.bundle import (DEFAULT_CALIB_SIZE, DEFAULT_VAL_FRACTION, DataBundle, carve_test,
                                make_bundle)

MEAN = 0.3053  # of all 1,797 images, after /16
STD = 0.3760
TEST_FRACTION = 0.2


def load(*, seed: int = 0, limit: int | None = None, val_fraction: float = DEFAULT_VAL_FRACTION,
         calib_size: int = DEFAULT_CALIB_SIZE, **_: object) -> DataBundle:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = ((d.images.astype(np.float32) / 16.0 - MEAN) / STD)[:, None].astype(np.float32)
    y = d.target.astype(np.int64)
    x_tr, y_tr, x_te, y_te = carve_test(x, y, test_fraction=TEST_FRACTION, seed=seed,
                                        where="digits")
    return make_bundle("digits", x_tr, y_tr, x_te, y_te, seed=seed, val_fraction=val_fraction,
                       calib_size=calib_size, limit=limit, num_classes=10,
                       info={"source": "sklearn.datasets.load_digits", "mean": MEAN, "std": STD})
