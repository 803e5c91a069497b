"""A learnable synthetic dataset for tests: class ``k`` is Gaussian noise around a fixed random
prototype, so a small model beats chance within a few batches."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from dnnzip.data.bundle import DataBundle, make_bundle
from dnnzip.errors import DataError


def synthetic(input_shape: Sequence[int], num_classes: int, n: int = 256, seed: int = 0, *,
              noise: float = 0.5, val_fraction: float = 0.2, calib_size: int = 64) -> DataBundle:
    """``n`` train and ``max(n // 4, num_classes)`` test samples of shape ``input_shape``."""
    shape = tuple(int(d) for d in input_shape)
    if not shape or min(shape) < 1:
        raise DataError(f"synthetic: input_shape must be non-empty positive ints, got {shape}.")
    if num_classes < 2 or n < 4:
        raise DataError(f"synthetic: need num_classes >= 2 and n >= 4, got {num_classes}, {n}.")
    rng = np.random.default_rng(seed)
    protos = rng.standard_normal((num_classes, *shape)).astype(np.float32)

    def draw(count: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, num_classes, size=count)
        k = min(num_classes, count)
        y[:k] = np.arange(k)  # every class appears
        x = protos[y] + noise * rng.standard_normal((count, *shape)).astype(np.float32)
        return x.astype(np.float32), y.astype(np.int64)

    x_tr, y_tr = draw(n)
    x_te, y_te = draw(max(n // 4, num_classes))
    return make_bundle("synthetic", x_tr, y_tr, x_te, y_te, seed=seed, val_fraction=val_fraction,
                       calib_size=calib_size, num_classes=num_classes,
                       info={"source": "synthetic", "noise": noise})
