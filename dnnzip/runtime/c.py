"""The ``c`` runtime: the model as generated C99 (``dnnzip.export.c``), compiled with the system
C compiler (``$CC``, else ``cc``) into a shared library and called through ``ctypes``.

Flags: ``-O3 -std=c99 -march=native -fPIC -shared`` (no ``-ffast-math``: sums keep their order
per output, so results stay within float rounding of torch). Single-threaded, like an MCU:
``threads`` must be 1.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
import tempfile
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from torch import nn

from dnnzip.errors import ConfigError, UnsupportedLayerError
from dnnzip.runtime import BaseRuntime, check_threads

CFLAGS = ("-O3", "-std=c99", "-march=native", "-fPIC", "-shared")


def compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise ConfigError("the c runtime needs a C compiler: install gcc/clang or set $CC; or "
                          "use --runtime onnxruntime")
    return cc


class CSession:
    runtime = "c"
    threads = 1

    def __init__(self, lib: ctypes.CDLL, n_in: int, n_out: int, out_shape: tuple[int, ...],
                 workdir: str):
        self.lib, self.n_in, self.n_out, self.out_shape = lib, n_in, n_out, out_shape
        self.fn = lib.dnnzip_forward
        self.fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        self.fn.restype = ctypes.c_int
        self.workdir = workdir
        self._cleanup = weakref.finalize(self, shutil.rmtree, workdir, True)

    def _arrays(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        if hasattr(x, "detach"):
            x = x.detach().cpu().numpy()
        xa = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        batch = xa.shape[0] if xa.ndim else 1
        if xa.size != batch * self.n_in:
            raise ConfigError(f"the c runtime's model takes {self.n_in} floats per sample; got "
                              f"an input of shape {tuple(xa.shape)}")
        return xa, np.empty((batch, *self.out_shape), dtype=np.float32)

    def run(self, x: Any) -> np.ndarray:
        xa, out = self._arrays(x)
        self.fn(xa.ctypes.data, out.ctypes.data, xa.shape[0])
        return out

    @contextlib.contextmanager
    def bind(self, x: Any) -> Iterator[Callable[[], Any]]:
        xa, out = self._arrays(x)
        fn, pin, pout, batch = self.fn, xa.ctypes.data, out.ctypes.data, xa.shape[0]
        yield lambda: fn(pin, pout, batch)


class CRuntime(BaseRuntime):
    name = "c"

    def prepare(self, model: Any, example: Any = None, *, threads: int = 1) -> CSession:
        from dnnzip.export.c import export_c, generate

        if check_threads(threads) != 1:
            raise ConfigError(f"the c runtime is single-threaded; got threads={threads}. Use "
                              f"threads=1 or --runtime onnxruntime")
        if not isinstance(model, nn.Module):
            raise ConfigError(f"the c runtime compiles an nn.Module, got {type(model).__name__}")
        if example is None:
            raise ConfigError("the c runtime needs an example input to trace the model")
        _, n_in, n_out, out_shape = generate(model, example)
        workdir = tempfile.mkdtemp(prefix="dnnzip-c-")
        try:
            src = export_c(model, example, Path(workdir) / "model.c")
            lib = Path(workdir) / "model.so"
            proc = subprocess.run([compiler(), *CFLAGS, "-o", str(lib), str(src), "-lm"],
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise UnsupportedLayerError(f"compiling the generated C failed: "
                                            f"{proc.stderr.strip()[:400]}; use --runtime "
                                            f"onnxruntime")
            return CSession(ctypes.CDLL(str(lib)), n_in, n_out, out_shape, workdir)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
