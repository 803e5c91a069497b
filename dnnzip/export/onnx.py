"""ONNX export of an ``nn.Module``, written atomically and checked.

Exporter choice (measured in torch 2.13 / onnxruntime 1.32 on all ten zoo models, 2-core CPU):
both exporters succeed on every zoo model with outputs within 2e-7 of eager; the
TorchScript-based exporter (``dynamo=False``) produces opset 17 directly in 0.1-3 s, the
``torch.export``-based one (``dynamo=True``) takes 4-36 s (GRU: 36 s), has no opset-17
implementations (it exports opset 18 and converts down, which produced an invalid graph for
``bincount``) and prints progress.
``exporter="auto"`` (default) therefore tries the TorchScript exporter first and falls back to
dynamo when it fails; the legacy path is deprecated upstream, so the fallback keeps this working
when it goes. The dynamo fallback exports at ``max(opset, 18)``.
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dnnzip.errors import ConfigError, FormatError, UnsupportedLayerError

_EXPORTERS = ("auto", "legacy", "dynamo")
_OP_PATTERNS = (r"operator '?(aten::\w+|prim::\w+|\w+::\w+)'?", r"(aten::\w+)", r"(aten\.\w+)",
                r"Python operator (\w+)", r"function (\w+) .*not supported",
                r"[Uu]nsupported (?:op|operator|FX nodes?)[^:]*: *\{?'?([\w.:]+)")


def _failed_op(messages: list[str]) -> str | None:
    for msg in messages:
        for pat in _OP_PATTERNS:
            m = re.search(pat, msg)
            if m:
                return m.group(1)
    return None


def _names(n: int, stem: str) -> list[str]:
    return [stem] if n == 1 else [f"{stem}_{i}" for i in range(n)]


def _count_outputs(out: Any) -> int:
    if isinstance(out, (tuple, list)):
        return sum(_count_outputs(o) for o in out)
    return 1


def _export(model: nn.Module, args: tuple, path: Path, *, opset: int, dynamic_batch: bool,
            dynamo: bool, n_out: int) -> None:
    in_names, out_names = _names(len(args), "input"), _names(n_out, "output")
    kw: dict[str, Any] = dict(input_names=in_names, output_names=out_names, opset_version=opset,
                              dynamo=dynamo)
    if dynamic_batch and dynamo:
        batch = torch.export.Dim("batch", min=1)
        kw["dynamic_shapes"] = tuple({0: batch} for _ in args)
    elif dynamic_batch:
        kw["dynamic_axes"] = {n: {0: "batch"} for n in in_names + out_names}
    if dynamo:
        kw["external_data"] = False
        kw["opset_version"] = max(opset, 18)  # no lower-opset implementations; see docstring
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), \
            contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(path), **kw)


def to_onnx(model: nn.Module, example: Any, path: str | os.PathLike, *, opset: int = 17,
            dynamic_batch: bool = True, exporter: str = "auto") -> Path:
    """Export ``model`` (traced on ``example``) to ``path``; returns the path.

    The file is written to a temporary name next to ``path``, checked with ``onnx.checker`` and
    renamed, so a failed export never leaves a partial file. Inputs are named ``input`` (or
    ``input_0..``), outputs ``output``; with ``dynamic_batch`` dim 0 is symbolic.
    Raises ``UnsupportedLayerError`` naming the operator no exporter could convert.
    """
    import onnx

    if exporter not in _EXPORTERS:
        raise ConfigError(f"The 'exporter' parameter of to_onnx must be one of "
                          f"{', '.join(map(repr, _EXPORTERS))}. Got {exporter!r} instead.")
    if isinstance(opset, bool) or not isinstance(opset, int) or not 7 <= opset <= 23:
        raise ConfigError(f"The 'opset' parameter of to_onnx must be an int in [7, 23]. "
                          f"Got {opset!r} instead.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    args = example if isinstance(example, tuple) else (example,)
    m = copy.deepcopy(model).eval()
    with torch.no_grad():
        n_out = _count_outputs(m(*args))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    order = {"auto": (False, True), "legacy": (False,), "dynamo": (True,)}[exporter]
    errors: list[str] = []
    try:
        for dynamo in order:
            try:
                _export(m, args, tmp, opset=opset, dynamic_batch=dynamic_batch, dynamo=dynamo,
                        n_out=n_out)
                break
            except Exception as exc:  # exporter errors have many types (OnnxExporterError, ...)
                errors.append(f"{'dynamo' if dynamo else 'torchscript'} exporter: "
                              f"{type(exc).__name__}: {exc}")
                tmp.unlink(missing_ok=True)
        else:
            op = _failed_op(errors)
            detail = errors[0].splitlines()[0][:300]
            raise UnsupportedLayerError(
                f"ONNX export of {type(model).__name__} failed"
                f"{f' at operator {op!r}' if op else ''} ({detail}); rewrite that op with "
                f"ONNX-exportable ones, or use --runtime torch") from None
        try:
            onnx.checker.check_model(str(tmp))
        except onnx.checker.ValidationError as exc:
            raise FormatError(f"exported ONNX graph for {type(model).__name__} is invalid: "
                              f"{str(exc).splitlines()[0]}; use --runtime torch") from exc
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def check_onnx(model: nn.Module, path: str | os.PathLike, example: Any, *, rtol: float = 1e-4,
               atol: float = 1e-5) -> float:
    """Run ``path`` in onnxruntime and ``model`` in torch on ``example``; return the largest
    absolute difference of the first outputs. Raises ``FormatError`` beyond the tolerances."""
    from dnnzip.runtime.ort import OrtRuntime
    from dnnzip.runtime.torch_rt import TorchRuntime

    got = OrtRuntime().prepare(path).run(example)
    want = TorchRuntime().prepare(model).run(example)
    if got.shape != want.shape:
        raise FormatError(f"ONNX file {str(path)!r} gives output shape {got.shape}, torch gives "
                          f"{want.shape}")
    diff = float(np.max(np.abs(got.astype(np.float64) - want))) if got.size else 0.0
    if not np.allclose(got, want, rtol=rtol, atol=atol):
        raise FormatError(f"ONNX file {str(path)!r} differs from the torch model by up to "
                          f"{diff:.3g} (rtol={rtol}, atol={atol}); re-export it or use "
                          f"--runtime torch")
    return diff


def has_int8_layers(model: nn.Module) -> bool:
    """Whether ``model`` holds ``dnnzip.quant`` int8 layers (exported as a QDQ graph)."""
    try:
        from dnnzip.quant.modules import Int8Layer
    except ImportError:
        return False
    return any(isinstance(m, Int8Layer) for m in model.modules())


def export_for_runtime(model: nn.Module, example: Any, path: str | os.PathLike) -> Path:
    """The ONNX graph ONNX Runtime should run: int8 models as their QDQ graph
    (``dnnzip.quant.onnx_qdq.export_int8``, integer kernels), others with ``to_onnx``."""
    if has_int8_layers(model):
        from dnnzip.quant.onnx_qdq import export_int8

        x = example[0] if isinstance(example, tuple) else example
        export_int8(model, x, path)
        return Path(path)
    return to_onnx(model, example, path)
