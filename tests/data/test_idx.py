"""The IDX reader against hand-made good and malformed files."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from dnnzip.data import load_data
from dnnzip.data.idx import parse_idx, read_idx, read_images_labels, write_idx
from dnnzip.errors import DataError


def _gz(path, payload: bytes):
    with gzip.open(path, "wb") as fh:
        fh.write(payload)
    return path


def _fake_fashion(folder, n_train=40, n_test=12, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for stem, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{stem}-images-idx3-ubyte.gz",
                  rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{stem}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    return folder


def test_round_trip_images_and_labels(tmp_path):
    x = np.random.default_rng(1).integers(0, 256, (5, 3, 4), dtype=np.uint8)
    y = np.array([0, 9, 3, 3, 1], dtype=np.uint8)
    write_idx(tmp_path / "i.gz", x)
    write_idx(tmp_path / "l.gz", y)
    gx, gy = read_images_labels(tmp_path / "i.gz", tmp_path / "l.gz")
    np.testing.assert_array_equal(gx, x)
    np.testing.assert_array_equal(gy, y)


def test_uncompressed_and_wide_dtypes(tmp_path):
    a = np.arange(12, dtype=np.int32).reshape(3, 4) - 5
    write_idx(tmp_path / "a.idx", a, compress=False)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), a)


def test_bad_magic_names_file(tmp_path):
    p = _gz(tmp_path / "bad.gz", b"\x01\x02\x08\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(DataError, match=r"bad\.gz.*magic"):
        read_idx(p)


def test_unknown_type_code(tmp_path):
    p = _gz(tmp_path / "t.gz", b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(DataError, match="magic"):
        read_idx(p)


def test_truncated_data(tmp_path):
    payload = b"\x00\x00\x08\x03" + struct.pack(">III", 10, 28, 28) + bytes(28 * 28 * 9)
    with pytest.raises(DataError, match=r"truncated.*7840.*7056"):
        read_idx(_gz(tmp_path / "short.gz", payload))


def test_truncated_header_and_trailing_bytes():
    with pytest.raises(DataError, match="truncated IDX header"):
        parse_idx(b"\x00\x00\x08\x03" + struct.pack(">I", 10), where="h")
    with pytest.raises(DataError, match="trailing"):
        parse_idx(b"\x00\x00\x08\x01" + struct.pack(">I", 2) + b"\x01\x02\x03", where="t")
    with pytest.raises(DataError, match="too short"):
        parse_idx(b"\x00", where="s")


def test_huge_declared_size_is_rejected_without_allocating(tmp_path):
    payload = b"\x00\x00\x08\x03" + struct.pack(">III", 2**32 - 1, 2**32 - 1, 2**32 - 1)
    with pytest.raises(DataError, match="truncated"):
        read_idx(_gz(tmp_path / "huge.gz", payload))


def test_corrupt_gzip(tmp_path):
    p = tmp_path / "c.gz"
    p.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(DataError, match=r"c\.gz"):
        read_idx(p)


def test_count_mismatch(tmp_path):
    write_idx(tmp_path / "i.gz", np.zeros((4, 28, 28), np.uint8))
    write_idx(tmp_path / "l.gz", np.zeros(3, np.uint8))
    with pytest.raises(DataError, match=r"3 labels for the 4 images"):
        read_images_labels(tmp_path / "i.gz", tmp_path / "l.gz")


def test_label_out_of_range(tmp_path):
    write_idx(tmp_path / "i.gz", np.zeros((2, 28, 28), np.uint8))
    write_idx(tmp_path / "l.gz", np.array([1, 10], np.uint8))
    with pytest.raises(DataError, match="label 10 out of range"):
        read_images_labels(tmp_path / "i.gz", tmp_path / "l.gz")


def test_images_must_be_3d(tmp_path):
    write_idx(tmp_path / "i.gz", np.zeros((2, 784), np.uint8))
    write_idx(tmp_path / "l.gz", np.zeros(2, np.uint8))
    with pytest.raises(DataError, match="3-D"):
        read_images_labels(tmp_path / "i.gz", tmp_path / "l.gz")


def test_fashion_mnist_from_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("DNNZIP_DATA", raising=False)
    folder = _fake_fashion(tmp_path / "fm")
    b = load_data("fashion-mnist", data_dir=folder, val_fraction=0.25)
    assert b.input_shape == (1, 28, 28) and b.num_classes == 10
    assert b.sizes() == {"train": 30, "val": 10, "test": 12, "calib": 30}
    x, y = b.train[0]
    assert x.dtype.is_floating_point and y.dtype.is_signed and y.ndim == 0
    assert b.info["source"] == str(folder)


def test_fashion_mnist_env_subfolder(tmp_path, monkeypatch):
    _fake_fashion(tmp_path / "root" / "fashion-mnist")
    monkeypatch.setenv("DNNZIP_DATA", str(tmp_path / "root"))
    assert load_data("fashion-mnist", data_dir=tmp_path / "nowhere").sizes()["test"] == 12


def test_missing_fashion_mnist_says_where_and_how(tmp_path, monkeypatch):
    import dnnzip.data.fashion_mnist as fm
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "system")
    monkeypatch.delenv("DNNZIP_DATA", raising=False)
    with pytest.raises(DataError) as err:
        load_data("fashion-mnist", data_dir=tmp_path / "mine")
    msg = str(err.value)
    assert str(tmp_path / "mine") in msg and str(tmp_path / "system") in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "--download" in msg


def test_fashion_mnist_must_be_28x28(tmp_path, monkeypatch):
    monkeypatch.delenv("DNNZIP_DATA", raising=False)
    folder = _fake_fashion(tmp_path / "fm")
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((12, 32, 32), np.uint8))
    with pytest.raises(DataError, match=r"t10k-images.*32x32.*28x28"):
        load_data("fashion-mnist", data_dir=folder)


def test_corrupt_fashion_mnist_file_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("DNNZIP_DATA", raising=False)
    folder = _fake_fashion(tmp_path / "fm")
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(11, np.uint8))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
        load_data("fashion-mnist", data_dir=folder)


def test_fuzz_parse_idx_only_raises_data_error():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    header = st.builds(lambda code, dims: struct.pack(">HBB", 0, code, len(dims))
                       + struct.pack(f">{len(dims)}I", *dims),
                       st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x07]),
                       st.lists(st.integers(0, 6), min_size=0, max_size=4))

    @settings(max_examples=300, deadline=None)
    @given(header, st.binary(max_size=200), st.booleans())
    def check(head, body, raw):
        data = body if raw else head + body
        try:
            arr = parse_idx(data, where="fuzz")
        except DataError:
            return
        assert arr.size * arr.itemsize == len(data) - 4 - 4 * arr.ndim

    check()
