"""The ``DataBundle``: the train/val/test/calib splits every other part of dnnzip consumes.

A split is a torch ``Dataset`` of ``(x: float32 tensor, y: int64 tensor)`` pairs (for ``text:``
bundles ``x`` is a ``str``). Loaders build one with :func:`make_bundle` from in-memory arrays:
the validation split is carved from train with a seeded permutation, and ``calib`` (activation
calibration for quantization, example inputs for tracing) is a small fixed subset of what remains
of train. Everything here is deterministic for a given seed.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from dnnzip.errors import DataError

METRICS = ("accuracy", "cosine")
SPLITS = ("train", "val", "test", "calib")
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_CALIB_SIZE = 512


class ArrayDataset(Dataset):
    """``(x[i], y[i])`` over two tensors held in memory (float32 inputs, int64 labels)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        if len(x) != len(y):
            raise DataError(f"inputs and labels differ in length: {len(x)} inputs, {len(y)} labels")
        self.x = x
        self.y = y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def check_arrays(name: str, x: np.ndarray, y: np.ndarray, *, where: str) -> None:
    """Raise ``DataError`` unless ``x``/``y`` are a usable non-empty labelled split."""
    if len(x) == 0:
        raise DataError(f"{where}: the {name} split is empty; expected at least one sample.")
    if len(x) != len(y):
        raise DataError(f"{where}: the {name} split has {len(x)} inputs but {len(y)} labels; "
                        f"expected one label per input.")
    if y.ndim != 1:
        raise DataError(f"{where}: {name} labels must be 1-D, got shape {tuple(y.shape)}.")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{where}: {name} inputs must be real numbers, got dtype {x.dtype}.")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        bad = int(np.argwhere(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))[0, 0])
        raise DataError(f"{where}: {name} input {bad} contains NaN or infinity; "
                        f"clean or impute the data first.")
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(np.mod(y, 1) == 0):
            raise DataError(f"{where}: {name} labels must be integer class ids, "
                            f"got dtype {y.dtype}.")
    if len(y) and y.min() < 0:
        raise DataError(f"{where}: {name} labels must be >= 0, got {int(y.min())}.")


def to_dataset(x: np.ndarray, y: np.ndarray) -> ArrayDataset:
    return ArrayDataset(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                        torch.from_numpy(np.asarray(y, dtype=np.int64)))


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) index arrays: a seeded permutation, the first ``val_fraction`` goes to val."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction!r}.")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    if n_val >= n:
        raise DataError(f"cannot carve a validation split from {n} training sample(s); "
                        f"expected at least 2.")
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def subset(ds: Dataset, n: int, seed: int) -> Dataset:
    """At most ``n`` samples of ``ds``, chosen by a seeded permutation (kept in order)."""
    if n >= len(ds):
        return ds
    idx = np.sort(np.random.default_rng(seed).permutation(len(ds))[:n])
    return Subset(ds, idx.tolist())


def collate(batch: list) -> Any:
    """``default_collate``, except a batch of texts becomes ``(list[str], LongTensor)``."""
    if batch and isinstance(batch[0][0], str):
        return [b[0] for b in batch], torch.stack([torch.as_tensor(b[1]) for b in batch])
    return default_collate(batch)


@dataclass(frozen=True)
class DataBundle:
    """The four splits of one dataset and what a model needs to know about them.

    input_shape: shape of one ``x`` without the batch dimension, e.g. ``(1, 28, 28)``.
    metric: ``"accuracy"`` (top-1) or ``"cosine"`` (embedding fidelity; reserved for
        embedding models such as the ``text:`` source).
    info: provenance (files read, normalisation) for reports.
    """

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    calib: Dataset
    input_shape: tuple[int, ...]
    num_classes: int
    metric: str = "accuracy"
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        if self.metric not in METRICS:
            raise DataError(f"DataBundle '{self.name}': metric must be one of {METRICS}, "
                            f"got {self.metric!r}.")
        for split in SPLITS:
            if len(getattr(self, split)) == 0:
                raise DataError(f"DataBundle '{self.name}': the {split} split is empty; "
                                f"expected at least one sample (use more data or a smaller "
                                f"val_fraction).")
        if self.metric == "accuracy" and self.num_classes < 1:
            raise DataError(f"DataBundle '{self.name}': num_classes must be >= 1, "
                            f"got {self.num_classes}.")
        self._check_shape()

    def _check_shape(self) -> None:
        for split in SPLITS:
            x, y = getattr(self, split)[0]
            if isinstance(x, str):
                continue
            got = tuple(torch.as_tensor(x).shape)
            if got != self.input_shape:
                raise DataError(f"DataBundle '{self.name}': {split} inputs have shape {got}, "
                                f"expected input_shape {self.input_shape}.")

    def split(self, split: str) -> Dataset:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}.")
        return getattr(self, split)

    def loader(self, split: str = "train", batch_size: int = 128, shuffle: bool = False,
               seed: int = 0, *, drop_last: bool = False) -> DataLoader:
        """A single-process ``DataLoader``; with ``shuffle`` the order depends only on ``seed``."""
        gen = torch.Generator().manual_seed(int(seed))
        return DataLoader(self.split(split), batch_size=int(batch_size), shuffle=shuffle,
                          generator=gen, drop_last=drop_last, collate_fn=collate)

    def example_input(self, n: int = 8) -> Any:
        """The first ``n`` calibration inputs as one batch (a list of ``str`` for text)."""
        ds = self.calib
        xs = [ds[i][0] for i in range(min(n, len(ds)))]
        if isinstance(xs[0], str):
            return xs
        return torch.stack([torch.as_tensor(x) for x in xs])

    def limit(self, n: int, *, seed: int = 0) -> DataBundle:
        """A copy with every split cut to at most ``n`` samples (seeded choice)."""
        if n < 1:
            raise DataError(f"limit must be >= 1, got {n}.")
        cut = {s: subset(getattr(self, s), n, seed) for s in SPLITS}
        return dataclasses.replace(self, **cut, info={**self.info, "limit": n})

    def sizes(self) -> dict[str, int]:
        return {s: len(getattr(self, s)) for s in SPLITS}

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary for reports and ``dnnzip zoo``."""
        return {"name": self.name, "input_shape": list(self.input_shape),
                "num_classes": self.num_classes, "metric": self.metric,
                "sizes": self.sizes(), **({"info": self.info} if self.info else {})}


def make_bundle(name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                y_test: np.ndarray, *, seed: int = 0, val_fraction: float = DEFAULT_VAL_FRACTION,
                calib_size: int = DEFAULT_CALIB_SIZE, limit: int | None = None,
                num_classes: int | None = None, info: dict | None = None,
                where: str | None = None, val: tuple[np.ndarray, np.ndarray] | None = None,
                ) -> DataBundle:
    """Validate arrays and build a bundle: val carved from train, calib a subset of the rest.

    ``val``: an explicit ``(x, y)`` validation split; then all of train is kept for training.
    ``limit`` caps the train pool (before the val split), the test split and an explicit val
    split, chosen with ``seed``; it is how tests and quick runs get "a few hundred samples".
    """
    where = where or name
    check_arrays("train", x_train, y_train, where=where)
    check_arrays("test", x_test, y_test, where=where)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"{where}: train inputs have shape {x_train.shape[1:]} but test inputs "
                        f"{x_test.shape[1:]}; expected the same per-sample shape.")
    if val is not None:
        check_arrays("val", *val, where=where)
        if val[0].shape[1:] != x_train.shape[1:]:
            raise DataError(f"{where}: val inputs have shape {val[0].shape[1:]} but train inputs "
                            f"{x_train.shape[1:]}; expected the same per-sample shape.")
    if limit is not None:
        if limit < 2:
            raise DataError(f"limit must be >= 2, got {limit}.")
        x_train, y_train = _cut(x_train, y_train, limit, seed)
        x_test, y_test = _cut(x_test, y_test, limit, seed + 1)
        val = _cut(*val, limit, seed + 3) if val is not None else None
    found = int(max(y_train.max(), y_test.max(), val[1].max() if val is not None else 0)) + 1
    if num_classes is None:
        num_classes = found
    elif found > num_classes:
        raise DataError(f"{where}: labels go up to {found - 1} but num_classes is {num_classes}.")
    full = to_dataset(x_train, y_train)
    if val is None:
        tr, va = split_indices(len(y_train), val_fraction, seed)
        val_ds: Dataset = Subset(full, va.tolist())
    else:
        tr, val_ds = np.arange(len(y_train)), to_dataset(*val)
    train = Subset(full, tr.tolist())
    calib = Subset(full, tr[np.sort(np.random.default_rng(seed + 2).permutation(len(tr))
                               [:calib_size])].tolist())
    return DataBundle(name=name, train=train, val=val_ds,
                      test=to_dataset(x_test, y_test), calib=calib,
                      input_shape=tuple(x_train.shape[1:]), num_classes=num_classes,
                      info=dict(info or {}, seed=seed, val_fraction=val_fraction))


def _cut(x: np.ndarray, y: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if n >= len(y):
        return x, y
    idx = np.sort(np.random.default_rng(seed).permutation(len(y))[:n])
    return x[idx], y[idx]


def carve_test(x: np.ndarray, y: np.ndarray, *, test_fraction: float, seed: int,
               where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split one labelled pool into (x_train, y_train, x_test, y_test) with a seeded permutation.

    The permutation uses a seed derived from, but different from, the val split's, so the two
    splits are independent draws.
    """
    check_arrays("full", x, y, where=where)
    if len(y) < 3:
        raise DataError(f"{where}: {len(y)} sample(s) cannot be split into train/val/test; "
                        f"expected at least 3.")
    perm = np.random.default_rng(seed + 7919).permutation(len(y))
    n_test = max(1, int(round(len(y) * test_fraction)))
    te, tr = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    return x[tr], y[tr], x[te], y[te]
