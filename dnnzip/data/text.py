"""``text:PATH`` — one text per line, for embedding models (metric ``"cosine"``).

Each split is a dataset of ``(text: str, label: int64 tensor)``; ``DataBundle.loader`` batches
them as ``(list[str], LongTensor)``, which a tokenising model adapter consumes. Lines may be
labelled as ``label<TAB>text``: if the first non-empty line has a tab every line must, and labels
(any strings) are mapped to ids in sorted order. Unlabelled lines get label ``-1`` and
``num_classes`` is 0. ``input_shape`` is ``()``. Blank lines are skipped. Test (20 %) and val are
carved with seeded permutations; calib is a subset of train.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from dnnzip.data.bundle import (DEFAULT_CALIB_SIZE, DEFAULT_VAL_FRACTION, DataBundle,
                                split_indices, subset)
from dnnzip.errors import DataError

TEST_FRACTION = 0.2
MAX_BYTES = 256 * 1024 * 1024


class TextDataset(Dataset):
    """``(texts[i], labels[i])`` with ``labels`` an int64 tensor (-1 when unlabelled)."""

    def __init__(self, texts: list[str], labels: torch.Tensor):
        self.texts = list(texts)
        self.labels = labels

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> tuple[str, torch.Tensor]:
        return self.texts[i], self.labels[i]


def parse_lines(text: str, *, where: str) -> tuple[list[str], list[str] | None]:
    """(texts, labels or None) from file content."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise DataError(f"{where}: no non-empty lines; expected one text per line.")
    if "\t" not in lines[0]:
        return lines, None
    texts, labels = [], []
    for no, ln in enumerate(lines, 1):
        label, sep, body = ln.partition("\t")
        if not sep or not label.strip() or not body.strip():
            raise DataError(f"{where}: non-empty line {no} is not 'label<TAB>text' ({ln[:60]!r}); "
                            f"the first line is labelled, so every line must be.")
        labels.append(label.strip())
        texts.append(body)
    return texts, labels


def load(path: str | os.PathLike, *, seed: int = 0, limit: int | None = None,
         val_fraction: float = DEFAULT_VAL_FRACTION, calib_size: int = DEFAULT_CALIB_SIZE,
         **_: object) -> DataBundle:
    p = Path(path)
    where = f"text:'{p}'"
    if not p.is_file():
        raise DataError(f"{where}: file not found; expected a UTF-8 file with one text per line.")
    if p.stat().st_size > MAX_BYTES:
        raise DataError(f"{where}: larger than {MAX_BYTES} bytes.")
    try:
        content = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{where}: not UTF-8 ({exc}); re-encode the file as UTF-8.") from None
    texts, labels = parse_lines(content, where=where)
    if labels is None:
        y = np.full(len(texts), -1, dtype=np.int64)
        classes: list[str] = []
    else:
        classes = sorted(set(labels))
        ids = {c: i for i, c in enumerate(classes)}
        y = np.asarray([ids[c] for c in labels], dtype=np.int64)
    if len(texts) < 3:
        raise DataError(f"{where}: {len(texts)} line(s) cannot be split into train/val/test; "
                        f"expected at least 3.")
    perm = np.random.default_rng(seed + 7919).permutation(len(texts))
    n_test = max(1, int(round(len(texts) * TEST_FRACTION)))
    pool, test_idx = np.sort(perm[n_test:]), np.sort(perm[:n_test])
    full = TextDataset(texts, torch.from_numpy(y))
    pool_ds = Subset(full, pool.tolist())
    if limit is not None:
        pool_ds = subset(pool_ds, limit, seed)
    tr, va = split_indices(len(pool_ds), val_fraction, seed)
    train = Subset(pool_ds, tr.tolist())
    test: Dataset = Subset(full, test_idx.tolist())
    if limit is not None:
        test = subset(test, limit, seed + 1)
    return DataBundle(name=p.stem, train=train, val=Subset(pool_ds, va.tolist()), test=test,
                      calib=subset(train, calib_size, seed + 2), input_shape=(),
                      num_classes=len(classes), metric="cosine",
                      info={"source": str(p), "classes": classes, "seed": seed})
