"""Export a model for deployment: ONNX fp32 (``onnx.py``), ONNX int8 QDQ (via ``dnnzip.quant``),
and C for microcontrollers (``dnnzip.export.c``, a later issue)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from dnnzip.errors import ConfigError
from dnnzip.export.onnx import check_onnx, export_for_runtime, has_int8_layers, to_onnx

FORMATS = ("onnx", "onnx-int8", "c")


def _example(model: nn.Module, data: Any, example: Any) -> Any:
    from dnnzip.profile.core import _example as profile_example

    return profile_example(model, data, example)


def export_model(model: nn.Module, output: str | os.PathLike, *, format: str = "onnx",
                 data: Any = None, example: Any = None) -> Path:
    """Write ``model`` as ``format`` to ``output``; returns the path written.

    onnx: fp32 graph (``to_onnx``), or the QDQ graph if the model already holds int8 layers.
    onnx-int8: the QDQ graph; a float model is first quantized with ``quant.int8`` calibrated on
    ``data`` (required then). c: generated C99 (``dnnzip.export.c``).
    """
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; formats: {', '.join(FORMATS)}.")
    x = _example(model, data, example)
    if format == "onnx":
        return export_for_runtime(model, x, output)
    if format == "onnx-int8":
        if not has_int8_layers(model):
            if data is None:
                raise ConfigError("--format onnx-int8 of a float model needs --data to calibrate "
                                  "the int8 quantization (or pass a model quantized with quant.int8)")
            from dnnzip.registry import Context, apply

            model = apply("quant.int8", model, ctx=Context(data=data, example_input=x))
        return export_for_runtime(model, x, output)
    try:
        from dnnzip.export import c as c_export
    except ImportError:
        c_export = None
    if not callable(getattr(c_export, "export_c", None)):
        raise ConfigError("C export is not available in this build yet; use --format onnx or "
                          "--format onnx-int8")
    return Path(c_export.export_c(model, x, output))


__all__ = ["to_onnx", "check_onnx", "export_model", "export_for_runtime", "FORMATS"]
