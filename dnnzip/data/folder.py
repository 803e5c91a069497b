"""``folder:PATH`` — images in one sub-folder per class (``PATH/<class>/<image>``).

Classes are the sub-folder names in sorted order. If ``PATH`` holds ``train/`` and ``test/``
(each with the class folders) those are the splits; otherwise 20 % is held out as test with a
seeded permutation. Images are read with Pillow when it is installed, else
``matplotlib.image``; they become float32 in [0, 1], channels first (grey ``(1, H, W)``, colour
``(3, H, W)``) and must all have the same shape. Every file read must resolve inside ``PATH``:
a symlink pointing outside it is rejected, so a dataset folder cannot make dnnzip read
arbitrary files.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dnnzip.data.bundle import (DEFAULT_CALIB_SIZE, DEFAULT_VAL_FRACTION, DataBundle, carve_test,
                                make_bundle)
from dnnzip.errors import DataError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm", ".tif", ".tiff"}
TEST_FRACTION = 0.2
MAX_IMAGES = 1_000_000
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def confined(root: Path, path: Path) -> Path:
    """``path`` resolved, or ``DataError`` if it (through any symlink) leaves ``root``."""
    real = path.resolve()
    if not real.is_relative_to(root):
        raise DataError(f"folder:'{root}': '{path}' resolves to '{real}', outside the dataset "
                        f"folder; symlinks must stay inside it. Copy the file in instead.")
    return real


def _read_image(path: Path) -> np.ndarray:
    """(C, H, W) float32 in [0, 1]."""
    try:
        try:
            from PIL import Image
        except ImportError:
            Image = None
        if Image is not None:
            with Image.open(path) as im:
                im = im.convert("L" if im.mode in _GREY_MODES else "RGB")
                a = np.asarray(im, dtype=np.float32) / 255.0
        else:
            import matplotlib.image as mpimg
            a = np.asarray(mpimg.imread(path))
            a = a.astype(np.float32) / (255.0 if a.dtype == np.uint8 else 1.0)
            if a.ndim == 3 and a.shape[2] == 4:
                a = a[..., :3]
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"'{path}': not a readable image ({exc}).") from None
    if a.ndim == 2:
        return a[None]
    if a.ndim == 3:
        return np.moveaxis(a, 2, 0)
    raise DataError(f"'{path}': image has {a.ndim} dimensions; expected 2 (grey) or 3 (colour).")


def _class_dirs(root: Path, base: Path) -> list[Path]:
    dirs = sorted(p for p in base.iterdir() if not p.name.startswith(".") and p.is_dir())
    for d in dirs:
        confined(root, d)
    return dirs


def _scan(root: Path, base: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for label, cls in enumerate(classes):
        cdir = base / cls
        if not cdir.is_dir():
            raise DataError(f"folder:'{root}': '{base.name}/' has no class folder '{cls}'; "
                            f"expected the same class folders in train/ and test/.")
        files = sorted(p for p in confined(root, cdir).rglob("*")
                       if p.suffix.lower() in EXTENSIONS and not p.name.startswith("."))
        if not files:
            raise DataError(f"folder:'{root}': class folder '{cdir}' holds no images "
                            f"({', '.join(sorted(EXTENSIONS))}).")
        for f in files:
            real = confined(root, f)
            if not real.is_file():
                continue
            xs.append(_read_image(real))
            ys.append(label)
            if len(xs) > MAX_IMAGES:
                raise DataError(f"folder:'{root}': more than {MAX_IMAGES} images.")
    shapes = {x.shape for x in xs}
    if len(shapes) != 1:
        raise DataError(f"folder:'{root}': images have different shapes {sorted(shapes)}; "
                        f"expected one shape (resize them, and use all grey or all colour).")
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def load(path: str | os.PathLike, *, seed: int = 0, limit: int | None = None,
         val_fraction: float = DEFAULT_VAL_FRACTION, calib_size: int = DEFAULT_CALIB_SIZE,
         **_: object) -> DataBundle:
    root = Path(path).resolve()
    if not root.is_dir():
        raise DataError(f"folder:'{path}': not a directory; expected one sub-folder per class.")
    split_dirs = {"train", "test"} <= {p.name for p in root.iterdir() if p.is_dir()}
    base = confined(root, root / "train") if split_dirs else root
    classes = [d.name for d in _class_dirs(root, base)]
    if len(classes) < 1:
        raise DataError(f"folder:'{path}': no class sub-folders; expected PATH/<class>/<image>.")
    if split_dirs:
        x_tr, y_tr = _scan(root, base, classes)
        x_te, y_te = _scan(root, confined(root, root / "test"), classes)
    else:
        x_tr, y_tr, x_te, y_te = carve_test(*_scan(root, root, classes),
                                            test_fraction=TEST_FRACTION, seed=seed,
                                            where=f"folder:'{path}'")
    return make_bundle(root.name, x_tr, y_tr, x_te, y_te, seed=seed, val_fraction=val_fraction,
                       calib_size=calib_size, limit=limit, num_classes=len(classes),
                       where=f"folder:'{path}'", info={"source": str(root), "classes": classes})
