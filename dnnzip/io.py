"""Atomic file writes (every file dnnzip writes appears whole or not at all) and the cache folder."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def cache_root() -> Path:
    """dnnzip's cache folder: ``$DNNZIP_CACHE``, else ``~/.cache/dnnzip`` (trained demo weights,
    compiled kernels, downloads)."""
    return Path(os.environ.get("DNNZIP_CACHE") or Path.home() / ".cache" / "dnnzip")


def _file_mode(path: Path) -> int:
    """The permission bits a plain ``open(path, "w")`` would give: an existing file keeps its
    own, a new one gets 0o666 minus the umask. (``mkstemp`` creates 0o600 files, which would make
    every artifact unreadable to other users, a web server or a deploy account.)"""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (``os.umask`` can only
    set it, which would briefly widen it for other threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, data: bytes) -> int:
    """Write ``data`` to ``path`` via a temp file in the same folder, fsync, and ``os.replace``.

    A failure at any point removes the temp file and leaves an existing ``path`` untouched.
    The file gets the permissions a plain write would (``_file_mode``). Returns the bytes
    written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _file_mode(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # some filesystems refuse fsync on directories
        pass
    return len(data)


def atomic_json(path: str | os.PathLike, data: Any) -> None:
    """``data`` as indented, key-sorted JSON, written atomically."""
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True, default=str).encode())
