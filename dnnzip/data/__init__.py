"""Datasets as ``DataBundle``s: built-in sources, user files, torchvision-style datasets.

``load_data(spec)`` dispatches on the spec: ``fashion-mnist``, ``digits``, ``mnist1d``,
``npz:PATH``, ``folder:PATH``, ``text:PATH``. Nothing is downloaded unless ``download=True``.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from dnnzip.data.bundle import (DEFAULT_CALIB_SIZE, DEFAULT_VAL_FRACTION, ArrayDataset,
                                DataBundle, make_bundle, split_indices, subset)
from dnnzip.data.synthetic import synthetic
from dnnzip.errors import DataError

__all__ = ["ArrayDataset", "DataBundle", "from_datasets", "load_data", "make_bundle", "names",
           "synthetic"]


def _builtin(module: str) -> Callable[..., DataBundle]:
    def load(**kw: Any) -> DataBundle:
        import importlib
        return importlib.import_module(f"dnnzip.data.{module}").load(**kw)
    return load


_SOURCES: dict[str, Callable[..., DataBundle]] = {
    "fashion-mnist": _builtin("fashion_mnist"),
    "digits": _builtin("digits"),
    "mnist1d": _builtin("mnist1d"),
}
_PATH_SOURCES = {"npz": "npz", "folder": "folder", "text": "text"}
_DESCRIPTIONS = {
    "fashion-mnist": "Fashion-MNIST 28x28 grey clothing images, 10 classes (IDX files)",
    "digits": "scikit-learn 8x8 handwritten digits, 10 classes",
    "mnist1d": "MNIST-1D 40-sample signals, 10 classes (generated offline)",
    "npz:PATH": "arrays x/y or x_train/y_train/x_test/y_test in a .npz file",
    "folder:PATH": "images in one sub-folder per class",
    "text:PATH": "one text per line ('label<TAB>text' optional), for embedding models",
}


def names() -> dict[str, str]:
    """Known dataset specs and a one-line description of each."""
    return dict(_DESCRIPTIONS)


def load_data(spec: str, *, data_dir: str | os.PathLike | None = None, seed: int = 0,
              download: bool = False, limit: int | None = None,
              val_fraction: float = DEFAULT_VAL_FRACTION,
              calib_size: int = DEFAULT_CALIB_SIZE) -> DataBundle:
    """Load the dataset named by ``spec`` as a ``DataBundle``.

    data_dir: where to look first (Fashion-MNIST); ``$DNNZIP_DATA`` and the system folder follow.
    seed: fixes the val/test carving and every subset.
    download: allow a verified download when the files are missing (Fashion-MNIST only).
    limit: cap the train pool and the test split at ``limit`` samples (quick runs, tests).
    val_fraction: share of the training pool held out for validation (early stopping).
    """
    if not isinstance(spec, str) or not spec:
        raise DataError(f"dataset spec must be a non-empty string, got {spec!r}.")
    common = dict(seed=seed, limit=limit, val_fraction=val_fraction, calib_size=calib_size)
    key = spec.strip().lower()
    if key in _SOURCES:
        extra = {"data_dir": data_dir, "download": download} if key == "fashion-mnist" else {}
        return _SOURCES[key](**common, **extra)
    kind, sep, path = spec.partition(":")
    if sep and kind.lower() in _PATH_SOURCES and path:
        import importlib
        mod = importlib.import_module(f"dnnzip.data.{_PATH_SOURCES[kind.lower()]}")
        return mod.load(os.path.expanduser(path), **common)
    raise DataError(f"unknown dataset {spec!r}; known datasets: {', '.join(_DESCRIPTIONS)}.")


class _Converted(Dataset):
    """A torchvision-style dataset whose samples become ``(float32 tensor, int64 tensor)``."""

    def __init__(self, ds: Dataset, where: str):
        self.ds = ds
        self.where = where
        self.shape: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.ds[i]
        if not isinstance(x, (torch.Tensor, np.ndarray)):
            raise DataError(f"{self.where}: sample {i} input is a {type(x).__name__}; expected a "
                            f"tensor or array. Give the dataset transform=ToTensor() (or similar).")
        x = torch.as_tensor(x, dtype=torch.float32)
        if self.shape is None:
            self.shape = tuple(x.shape)
        elif tuple(x.shape) != self.shape:
            raise DataError(f"{self.where}: sample {i} has shape {tuple(x.shape)}, expected "
                            f"{self.shape} like the first sample; resize or crop consistently.")
        if not torch.isfinite(x).all():
            raise DataError(f"{self.where}: sample {i} contains NaN or infinity.")
        return x, torch.as_tensor(int(y), dtype=torch.int64)


def _num_classes(ds: Dataset) -> int:
    classes = getattr(ds, "classes", None)
    if classes:
        return len(classes)
    targets = getattr(ds, "targets", None)
    if targets is not None and len(targets):
        return int(max(int(t) for t in targets)) + 1
    return int(max(int(ds[i][1]) for i in range(len(ds)))) + 1


def from_datasets(train: Dataset, test: Dataset, *, name: str = "custom",
                  val: Dataset | None = None, num_classes: int | None = None,
                  input_shape: Sequence[int] | None = None, seed: int = 0,
                  val_fraction: float = DEFAULT_VAL_FRACTION,
                  calib_size: int = DEFAULT_CALIB_SIZE, metric: str = "accuracy",
                  limit: int | None = None) -> DataBundle:
    """Wrap torchvision-style ``(x, label)`` datasets; val is carved from train unless given.

    Inputs must already be tensors or arrays (e.g. ``transform=ToTensor()``); they are converted
    to float32 and labels to int64 on access, so nothing is loaded up front. A sample whose shape
    differs from the first one, or that holds NaN/inf, raises ``DataError`` when it is read.
    """
    for split, ds in (("train", train), ("test", test)):
        if len(ds) == 0:
            raise DataError(f"from_datasets('{name}'): the {split} dataset is empty.")
    tr: Dataset = _Converted(train, f"{name}/train")
    te: Dataset = _Converted(test, f"{name}/test")
    if limit is not None:
        tr, te = subset(tr, limit, seed), subset(te, limit, seed + 1)
    if val is None:
        tr_idx, va_idx = split_indices(len(tr), val_fraction, seed)
        va: Dataset = Subset(tr, va_idx.tolist())
        tr = Subset(tr, tr_idx.tolist())
    else:
        va = _Converted(val, f"{name}/val")
        if limit is not None:
            va = subset(va, limit, seed + 3)
    shape = tuple(input_shape) if input_shape is not None else tuple(tr[0][0].shape)
    k = num_classes if num_classes is not None else _num_classes(train)
    return DataBundle(name=name, train=tr, val=va, test=te, calib=subset(tr, calib_size, seed + 2),
                      input_shape=shape, num_classes=k, metric=metric,
                      info={"source": f"{type(train).__name__} datasets", "seed": seed})
