"""Small C kernels for the hot loops numpy cannot vectorise, loaded through ``ctypes``.

``load(name)`` compiles ``dnnzip/kernels/<name>.c`` once with the system C compiler (the one
``dnnzip.runtime.c.compiler`` finds: ``$CC``, else ``cc``/``gcc``/``clang``) and caches the shared
library under ``$DNNZIP_KERNEL_CACHE`` (default ``dnnzip.io.cache_root() / "kernels"``; the
temp folder if that is not writable), keyed by a hash
of the source, the compiler, the flags and the CPU's feature flags (``-march=native`` code must
not run on another CPU sharing the cache), so a changed source or compiler builds anew. Flags are
``-O3 -std=c99 -march=native -fPIC -shared``; if the compiler refuses ``-march=native`` they are
retried without it. Every caller keeps a numpy path: ``load`` returns ``None`` (never raises)
when no compiler exists, the build fails, or ``DNNZIP_NO_C=1`` is set, and the caller falls back.

Kernels: ``ans`` (the rANS decoder of ``constriction``'s default ``AnsCoder`` with a
``Categorical(perfect=False)`` model, bit for bit), ``xnor`` (XNOR-popcount GEMM for binary
layers), ``eie`` (CSC sparse x codebook mat-vec of EIE).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
FLAGS = ("-O3", "-std=c99", "-march=native", "-fPIC", "-shared")
_lock = threading.Lock()
_loaded: dict[str, ctypes.CDLL | None] = {}
_errors: dict[str, str] = {}


def cache_dir() -> Path:
    from dnnzip.io import cache_root
    env = os.environ.get("DNNZIP_KERNEL_CACHE")
    return Path(env) if env else cache_root() / "kernels"


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        import platform

        return platform.processor() or platform.machine()


def _compiler() -> str | None:
    from dnnzip.errors import ConfigError
    from dnnzip.runtime.c import compiler

    try:
        return compiler()
    except ConfigError:
        return None


def _writable(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if os.access(folder, os.W_OK):
            return folder
    except OSError:
        pass
    fallback = Path(tempfile.gettempdir()) / f"dnnzip-kernels-{os.getuid()}"
    fallback.mkdir(mode=0o700, parents=True, exist_ok=True)
    return fallback


def _build(name: str) -> ctypes.CDLL | None:
    src = HERE / f"{name}.c"
    cc = _compiler()
    if cc is None:
        _errors[name] = "no C compiler found (install gcc/clang or set $CC)"
        return None
    text = src.read_bytes()
    for flags in (FLAGS, tuple(f for f in FLAGS if f != "-march=native")):
        key = hashlib.sha256(text + repr((cc, flags, _cpu())).encode()).hexdigest()[:16]
        lib = _writable(cache_dir()) / f"{name}-{key}.so"
        if not lib.is_file():
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=lib.parent)
            os.close(fd)
            try:
                proc = subprocess.run([cc, *flags, "-o", tmp, str(src)], capture_output=True,
                                      text=True, check=False)
                if proc.returncode != 0:
                    _errors[name] = proc.stderr.strip()[:400] or f"{cc} failed"
                    continue
                os.replace(tmp, lib)  # atomic: concurrent builders race harmlessly
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        try:
            return ctypes.CDLL(str(lib))
        except OSError as exc:
            _errors[name] = str(exc)
    return None


def load(name: str) -> ctypes.CDLL | None:
    """The compiled kernel library ``name``, or None if C is unavailable (see ``why``)."""
    if os.environ.get("DNNZIP_NO_C", "") not in ("", "0"):
        return None
    lib = _loaded.get(name, False)
    if lib is not False:  # fast path: already built (or known to be unavailable)
        return lib
    with _lock:
        if name not in _loaded:
            try:
                _loaded[name] = _build(name)
            except OSError as exc:  # unwritable cache, missing source: fall back, don't fail
                _errors[name] = str(exc)
                _loaded[name] = None
        return _loaded[name]


def why(name: str) -> str:
    """Why ``load(name)`` returned None (empty if it did not)."""
    if os.environ.get("DNNZIP_NO_C", "") not in ("", "0"):
        return "DNNZIP_NO_C is set"
    return _errors.get(name, "")


def ptr(array) -> ctypes.c_void_p:
    """The data pointer of a C-contiguous numpy array, for ctypes calls."""
    return ctypes.c_void_p(array.ctypes.data)


__all__ = ["load", "why", "ptr", "cache_dir"]
