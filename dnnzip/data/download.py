"""Explicit, verified downloads. Nothing in dnnzip downloads unless asked (``--download``).

Each file is fetched whole, its SHA-256 checked, and only then written with temp file + rename,
so an interrupted or tampered download never leaves a file that a later run would trust.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import urllib.request
from pathlib import Path
from typing import Callable

from dnnzip.io import atomic_write
from dnnzip.errors import DataError

FASHION_MNIST_URL = "https://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# SHA-256 of the *decompressed* IDX payloads: mirrors that re-compress the files (the Debian
# dataset-fashion-mnist package does) still verify, while any change to the data does not.
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte.gz":
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz":
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz":
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz":
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
MAX_DOWNLOAD = 200 * 1024 * 1024


def _fetch(url: str, *, timeout: float = 60.0) -> bytes:
    """GET ``url`` and return its body (capped). Tests replace this function."""
    if not url.startswith(("https://", "http://")):
        raise DataError(f"refusing to fetch {url!r}: only http(s) URLs are allowed.")
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - scheme checked
        body = resp.read(MAX_DOWNLOAD + 1)
    if len(body) > MAX_DOWNLOAD:
        raise DataError(f"{url}: response exceeds {MAX_DOWNLOAD} bytes.")
    return body


def payload_sha256(blob: bytes) -> str:
    """SHA-256 of ``blob`` after gunzipping it (when it is gzip)."""
    if blob[:2] == b"\x1f\x8b":
        try:
            blob = gzip.decompress(blob)
        except (OSError, EOFError) as exc:
            raise DataError(f"downloaded file is not valid gzip ({exc}).") from None
    return hashlib.sha256(blob).hexdigest()


def download_files(dest: str | os.PathLike, files: dict[str, str], base_url: str, *,
                   fetch: Callable[[str], bytes] | None = None) -> list[Path]:
    """Make ``dest`` hold every file in ``files`` (name -> payload SHA-256).

    Files already present with the right checksum are kept; others are fetched from
    ``base_url + name``. A checksum mismatch raises ``DataError`` and writes nothing.
    """
    fetch = fetch or _fetch
    dest = Path(dest)
    out = []
    for name, sha in files.items():
        target = dest / name
        if target.is_file() and payload_sha256(target.read_bytes()) == sha:
            out.append(target)
            continue
        url = base_url.rstrip("/") + "/" + name
        try:
            blob = fetch(url)
        except OSError as exc:
            raise DataError(f"could not download {url} ({exc}); check the network, or install "
                            f"the files by hand into '{dest}'.") from None
        got = payload_sha256(blob)
        if got != sha:
            raise DataError(f"{url}: SHA-256 mismatch; expected {sha}, got {got}. The file was "
                            f"not saved; the mirror may be corrupt or tampered with.")
        atomic_write(target, blob)
        out.append(target)
    return out


def download_fashion_mnist(dest: str | os.PathLike, *, base_url: str = FASHION_MNIST_URL,
                           fetch: Callable[[str], bytes] | None = None) -> list[Path]:
    """Download and verify the four Fashion-MNIST files into ``dest``."""
    return download_files(dest, FASHION_MNIST_FILES, base_url, fetch=fetch)
