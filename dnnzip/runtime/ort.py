"""The ``onnxruntime`` runtime: CPU execution provider, one session per prepared model.

Session options: ``intra_op_num_threads = threads``, ``inter_op_num_threads = 1``, sequential
execution, all graph optimizations. ``prepare`` accepts an ``nn.Module`` (exported with
``dnnzip.export.onnx.to_onnx``, the file kept only in memory) or the path of an existing
``.onnx`` file (e.g. an int8 QDQ model from ``dnnzip.quant``).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from dnnzip.errors import ConfigError, FormatError
from dnnzip.runtime import BaseRuntime, check_threads

_NP_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64,
             "tensor(float16)": np.float16, "tensor(int64)": np.int64, "tensor(int32)": np.int32,
             "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


def _to_numpy(v: Any, dtype: Any) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(v, dtype=dtype))


class OrtSession:
    runtime = "onnxruntime"

    def __init__(self, session: Any, threads: int, source: str):
        self.session = session
        self.threads = threads
        self.source = source
        self.inputs = session.get_inputs()

    def feeds(self, x: Any) -> dict[str, np.ndarray]:
        xs = x if isinstance(x, (tuple, list)) else (x,)
        if len(xs) != len(self.inputs):
            raise ConfigError(f"ONNX model {self.source} takes {len(self.inputs)} input(s) "
                              f"({', '.join(i.name for i in self.inputs)}), got {len(xs)}")
        return {i.name: _to_numpy(v, _NP_TYPES.get(i.type, np.float32))
                for i, v in zip(self.inputs, xs)}

    def run(self, x: Any) -> np.ndarray:
        return self.session.run(None, self.feeds(x))[0]

    @contextlib.contextmanager
    def bind(self, x: Any) -> Iterator[Callable[[], Any]]:
        feeds = self.feeds(x)
        run = self.session.run
        yield lambda: run(None, feeds)


def session_options(threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return so


class OrtRuntime(BaseRuntime):
    name = "onnxruntime"

    def prepare(self, model: Any, example: Any = None, *, threads: int = 1) -> OrtSession:
        import onnxruntime as ort

        threads = check_threads(threads)
        if isinstance(model, (str, os.PathLike)):
            path = Path(model)
            if not path.is_file():
                raise ConfigError(f"ONNX file {str(path)!r} does not exist")
            data, source = path.read_bytes(), str(path)
        else:
            if example is None:
                raise ConfigError("the onnxruntime runtime needs an example input to export "
                                  "an nn.Module to ONNX")
            from dnnzip.export.onnx import export_for_runtime

            with tempfile.TemporaryDirectory(prefix="dnnzip-ort-") as tmp:
                onnx_path = export_for_runtime(model, example, Path(tmp) / "model.onnx")
                data = onnx_path.read_bytes()
            source = f"<export of {type(model).__name__}>"
        try:
            sess = ort.InferenceSession(data, sess_options=session_options(threads),
                                        providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise FormatError(f"onnxruntime cannot load {source}: {exc}") from exc
        return OrtSession(sess, threads, source)
