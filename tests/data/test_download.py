"""Verified downloads, with the network replaced by a fake ``fetch``."""
from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest

import dnnzip.data.download as dl
from dnnzip.data import load_data
from dnnzip.data.idx import write_idx
from dnnzip.errors import DataError


def _files(tmp_path):
    """Small fake Fashion-MNIST files: name -> gz bytes, and their payload checksums."""
    rng = np.random.default_rng(0)
    blobs = {}
    for stem, n in (("train", 30), ("t10k", 10)):
        for kind, arr in (("images-idx3", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
                          ("labels-idx1", (np.arange(n) % 10).astype(np.uint8))):
            p = tmp_path / f"{stem}-{kind}-ubyte.gz"
            write_idx(p, arr)
            blobs[p.name] = p.read_bytes()
            p.unlink()
    sums = {k: hashlib.sha256(gzip.decompress(v)).hexdigest() for k, v in blobs.items()}
    return blobs, sums


def test_download_writes_verified_files_and_skips_good_ones(tmp_path, monkeypatch):
    blobs, sums = _files(tmp_path)
    calls = []

    def fake(url):
        calls.append(url)
        return blobs[url.rsplit("/", 1)[1]]

    out = dl.download_files(tmp_path / "d", sums, "https://example.invalid/fm/", fetch=fake)
    assert sorted(p.name for p in out) == sorted(blobs)
    assert all((tmp_path / "d" / n).read_bytes() == b for n, b in blobs.items())
    assert calls[0] == "https://example.invalid/fm/" + next(iter(sums))
    dl.download_files(tmp_path / "d", sums, "https://example.invalid/fm/", fetch=fake)
    assert len(calls) == len(blobs)  # second call found every file already verified
    assert not list((tmp_path / "d").glob("*.part"))


def test_checksum_mismatch_writes_nothing(tmp_path):
    blobs, sums = _files(tmp_path)
    name = next(iter(sums))
    with pytest.raises(DataError, match="SHA-256 mismatch"):
        dl.download_files(tmp_path / "d", {name: "0" * 64}, "https://x.invalid",
                          fetch=lambda url: blobs[name])
    assert not (tmp_path / "d" / name).exists()
    assert not list((tmp_path / "d").glob("*"))


def test_network_error_is_a_data_error(tmp_path):
    def broken(url):
        raise OSError("no route to host")

    with pytest.raises(DataError, match="could not download"):
        dl.download_files(tmp_path, {"a.gz": "0" * 64}, "https://x.invalid", fetch=broken)


def test_fetch_refuses_non_http():
    with pytest.raises(DataError, match="only http"):
        dl._fetch("file:///etc/passwd")


def test_load_data_downloads_only_when_asked(tmp_path, monkeypatch):
    import dnnzip.data.fashion_mnist as fm
    blobs, sums = _files(tmp_path)
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "none")
    monkeypatch.setattr(fm, "FASHION_MNIST_FILES", sums)
    monkeypatch.setattr(dl, "FASHION_MNIST_FILES", sums)
    monkeypatch.setattr(dl, "_fetch", lambda url: blobs[url.rsplit("/", 1)[1]])
    monkeypatch.setenv("DNNZIP_DATA", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="not found"):
        load_data("fashion-mnist")
    b = load_data("fashion-mnist", download=True)
    assert b.sizes()["test"] == 10
    assert (tmp_path / "cache" / "fashion-mnist" / "train-images-idx3-ubyte.gz").is_file()


def test_builtin_checksums_match_the_installed_dataset():
    from pathlib import Path
    folder = Path("/usr/share/datasets/fashion-mnist")
    if not folder.is_dir():
        pytest.skip("dataset-fashion-mnist not installed")
    name = "t10k-labels-idx1-ubyte.gz"
    assert dl.payload_sha256((folder / name).read_bytes()) == dl.FASHION_MNIST_FILES[name]
