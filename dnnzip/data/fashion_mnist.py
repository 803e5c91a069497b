"""Fashion-MNIST (Xiao et al. 2017): 60k/10k 28x28 grey images of 10 clothing classes.

Read from the original gzipped IDX files, searched in ``data_dir``, ``$DNNZIP_DATA`` (and its
``fashion-mnist/`` sub-folder) and ``/usr/share/datasets/fashion-mnist``. Pixels are scaled to
[0, 1] then standardised with the fixed training-set mean and std below, so every run and every
subset sees the same transform.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dnnzip.data.bundle import DEFAULT_CALIB_SIZE, DEFAULT_VAL_FRACTION, DataBundle, make_bundle
from dnnzip.data.download import FASHION_MNIST_FILES, download_fashion_mnist
from dnnzip.data.idx import read_images_labels
from dnnzip.errors import DataError

MEAN = 0.2860  # of the 60k training images, after /255
STD = 0.3530
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
           "Sneaker", "Bag", "Ankle boot")
_NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def candidate_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where Fashion-MNIST is looked for, in order."""
    dirs: list[Path] = []
    for base in (data_dir, os.environ.get("DNNZIP_DATA") or None):
        if base:
            dirs += [Path(base), Path(base) / "fashion-mnist"]
    dirs.append(SYSTEM_DIR)
    return dirs


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def locate(data_dir: str | os.PathLike | None = None) -> dict[str, tuple[Path, Path]]:
    """The first folder holding all four files, as {split: (images, labels)}."""
    looked = candidate_dirs(data_dir)
    for folder in looked:
        found = {s: (_find(folder, i), _find(folder, l)) for s, (i, l) in _NAMES.items()}
        if all(p is not None for pair in found.values() for p in pair):
            return found  # type: ignore[return-value]
    raise DataError(
        "Fashion-MNIST not found; looked in: " + ", ".join(f"'{d}'" for d in looked)
        + f". Expected the files {', '.join(FASHION_MNIST_FILES)}. Fix: `apt-get install "
        "dataset-fashion-mnist`, point --data-dir or $DNNZIP_DATA at a folder holding them, "
        "or pass --download (download=True) to fetch and verify them.")


def download_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Where ``download=True`` writes the files."""
    if data_dir:
        return Path(data_dir)
    if os.environ.get("DNNZIP_DATA"):
        return Path(os.environ["DNNZIP_DATA"]) / "fashion-mnist"
    from dnnzip.io import cache_root
    return cache_root() / "fashion-mnist"


def normalise(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28), standardised."""
    x = images.astype(np.float32)[:, None] / np.float32(255.0)
    return (x - np.float32(MEAN)) / np.float32(STD)


def load(*, data_dir: str | os.PathLike | None = None, seed: int = 0, download: bool = False,
         limit: int | None = None, val_fraction: float = DEFAULT_VAL_FRACTION,
         calib_size: int = DEFAULT_CALIB_SIZE) -> DataBundle:
    try:
        files = locate(data_dir)
    except DataError:
        if not download:
            raise
        download_fashion_mnist(download_dir(data_dir))
        files = locate(download_dir(data_dir))
    x_tr, y_tr = read_images_labels(*files["train"])
    x_te, y_te = read_images_labels(*files["test"])
    for x, (images, _) in ((x_tr, files["train"]), (x_te, files["test"])):
        if x.shape[1:] != (28, 28):
            raise DataError(f"'{images}': images are {x.shape[1]}x{x.shape[2]}; Fashion-MNIST "
                            f"images are 28x28. Use npz:PATH or folder:PATH for other data.")
    return make_bundle("fashion-mnist", normalise(x_tr), y_tr, normalise(x_te), y_te, seed=seed,
                       val_fraction=val_fraction, calib_size=calib_size, limit=limit,
                       num_classes=10,
                       info={"source": str(files["train"][0].parent), "mean": MEAN, "std": STD,
                             "classes": list(CLASSES)})
