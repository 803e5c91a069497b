"""Generate dependency-free C99 for a model, for microcontrollers and the ``c`` runtime.

The model is traced once (``dnnzip.profile.trace``: the same atomic calls the profiler counts)
and each call is lowered to a kernel of ``dnnzip_kernels.h``; weights become ``static const
float`` arrays (hex literals, bit-exact), activations static per-sample buffers, views
(``flatten``, ``view``, ``Dropout`` in eval) aliases. The entry point is

    int dnnzip_forward(const float *input, float *output, int batch);

processing one sample at a time (NCHW / NCL float32). Supported: Conv1d/Conv2d (groups, stride,
zero padding, dilation), Linear, BatchNorm1d/2d (folded to scale/shift), ReLU/ReLU6/Sigmoid/
Tanh, Max/AvgPool1d/2d, global average pooling, residual ``add``, flatten/view/Dropout/Identity.
Anything else raises ``UnsupportedLayerError`` naming the layer. Like ONNX tracing, the graph is
the one the example input took (no data-dependent control flow). Zero weights and zero inputs
of a dot product are skipped, so connection-pruned models and ReLU sparsity run faster.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dnnzip.errors import UnsupportedLayerError
from dnnzip.profile.counts import has_rule, is_atomic
from dnnzip.profile.trace import Event, first_tensor, tensors_in, trace

KERNELS = Path(__file__).with_name("dnnzip_kernels.h")
_ALIAS_FUNCS = {"flatten", "view", "reshape", "contiguous", "unsqueeze", "squeeze", "dropout",
                "detach", "clone"}
_ELEMENTWISE = {nn.ReLU: "dz_relu", nn.ReLU6: "dz_relu6", nn.Sigmoid: "dz_sigmoid",
                nn.Tanh: "dz_tanh"}
_ALIAS_MODULES = (nn.Flatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)


@dataclass
class _Program:
    consts: list[str] = field(default_factory=list)
    bufs: list[str] = field(default_factory=list)
    body: list[str] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)  # id(tensor) -> C buffer
    sizes: dict[str, int] = field(default_factory=dict)
    n: int = 0

    def const(self, t: torch.Tensor | np.ndarray, tag: str) -> str:
        arr = np.ascontiguousarray(np.asarray(t.detach() if isinstance(t, torch.Tensor) else t,
                                              dtype=np.float32)).ravel()
        name = f"{tag}{self.n}"
        self.n += 1
        vals = ",".join(float(v).hex() + "f" for v in arr.tolist()) or "0"
        self.consts.append(f"static const float {name}[{max(1, arr.size)}] = {{{vals}}};")
        return name

    def buf(self, t: torch.Tensor) -> str:
        name = f"b{self.n}"
        self.n += 1
        size = max(1, t[0].numel() if t.dim() else 1)
        self.bufs.append(f"static float {name}[{size}];")
        self.names[id(t)] = name
        self.sizes[name] = size
        return name


def _fail(ev: Event, why: str = "") -> UnsupportedLayerError:
    what = type(ev.module).__name__ if ev.kind == "module" else getattr(ev.func, "__name__", "?")
    return UnsupportedLayerError(
        f"'{ev.name}' ({what}) has no C lowering{': ' + why if why else ''}; supported: Conv1d/2d,"
        f" Linear, BatchNorm, ReLU/ReLU6/Sigmoid/Tanh, pooling, add, flatten; use --runtime "
        f"onnxruntime or --runtime torch")


def _pair(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[-1]))


def _geom(t: torch.Tensor) -> tuple[int, int, int]:
    """(C, H, W) of one sample: NCHW, or NCL as H=1."""
    s = t.shape[1:]
    if len(s) == 3:
        return int(s[0]), int(s[1]), int(s[2])
    if len(s) == 2:
        return int(s[0]), 1, int(s[1])
    return int(s[0]) if s else 1, 1, 1


def _lower_module(p: _Program, ev: Event, x: str, xt: torch.Tensor, yt: torch.Tensor) -> str:
    m = ev.module
    if isinstance(m, _ALIAS_MODULES):
        return x
    y = p.buf(yt)
    n = yt[0].numel()
    if type(m) in _ELEMENTWISE:
        p.body.append(f"{_ELEMENTWISE[type(m)]}({x}, {n}, {y});")
    elif isinstance(m, (nn.Conv1d, nn.Conv2d)) and type(m) in (nn.Conv1d, nn.Conv2d):
        if isinstance(m.padding, str) or m.padding_mode != "zeros":
            raise _fail(ev, "string padding or non-zero padding mode")
        C, H, W = _geom(xt)
        _, Ho, Wo = _geom(yt)
        one = isinstance(m, nn.Conv1d)
        KH, KW = (1, m.kernel_size[0]) if one else _pair(m.kernel_size)
        SH, SW = (1, m.stride[0]) if one else _pair(m.stride)
        PH, PW = (0, m.padding[0]) if one else _pair(m.padding)
        DH, DW = (1, m.dilation[0]) if one else _pair(m.dilation)
        w = p.const(m.weight, "w")
        b = p.const(m.bias, "c") if m.bias is not None else "0"
        p.body.append(f"dz_conv2d({x}, {C}, {H}, {W}, {w}, {b}, {m.out_channels}, {KH}, {KW}, "
                      f"{SH}, {SW}, {PH}, {PW}, {DH}, {DW}, {m.groups}, {y}, {Ho}, {Wo});")
    elif type(m) is nn.Linear:
        rows = xt[0].numel() // m.in_features
        wt = p.const(m.weight.detach().t().contiguous(), "w")
        b = p.const(m.bias, "c") if m.bias is not None else "0"
        p.body.append(f"dz_linear({x}, {rows}, {m.in_features}, {m.out_features}, {wt}, {b}, {y});")
    elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.running_var is not None:
        scale = (m.weight.detach() if m.affine else 1.0) / torch.sqrt(m.running_var + m.eps)
        shift = (m.bias.detach() if m.affine else 0.0) - m.running_mean * scale
        C, H, W = _geom(xt)
        p.body.append(f"dz_affine({x}, {C}, {H * W}, {p.const(scale, 'k')}, "
                      f"{p.const(shift, 'k')}, {y});")
    elif isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)):
        is_max = isinstance(m, (nn.MaxPool1d, nn.MaxPool2d))
        if m.ceil_mode or (is_max and _pair(m.dilation) != (1, 1)) or \
                (not is_max and (not m.count_include_pad or
                                 getattr(m, "divisor_override", None))):
            raise _fail(ev, "ceil_mode / dilation / avg-pool padding options")
        one = isinstance(m, (nn.MaxPool1d, nn.AvgPool1d))
        C, H, W = _geom(xt)
        _, Ho, Wo = _geom(yt)
        (KH, KW), (SH, SW), (PH, PW) = [((h, _pair(v)[0]) if one else _pair(v))
                                        for v, h in ((m.kernel_size, 1), (m.stride, 1),
                                                     (m.padding, 0))]
        p.body.append(f"dz_pool2d({x}, {C}, {H}, {W}, {KH}, {KW}, {SH}, {SW}, {PH}, {PW}, "
                      f"{0 if is_max else 1}, {y}, {Ho}, {Wo});")
    elif isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)) and \
            yt[0].numel() == yt.shape[1]:
        C, H, W = _geom(xt)
        p.body.append(f"dz_global_avg({x}, {C}, {H * W}, {y});")
    else:
        raise _fail(ev)
    return y


def _lower_function(p: _Program, ev: Event, yt: torch.Tensor) -> str:
    fname = getattr(ev.func, "__name__", "")
    ins = [t for t in tensors_in((ev.args, ev.kwargs)) if id(t) in p.names]
    if not ins:
        raise _fail(ev, "input is not a traced activation")
    x = p.names[id(ins[0])]
    if fname in _ALIAS_FUNCS and yt.is_contiguous() and ins[0].is_contiguous() and \
            yt.shape[0] == ins[0].shape[0] and yt.numel() == ins[0].numel():
        return x
    if fname in ("relu", "relu_"):
        y = p.buf(yt)
        p.body.append(f"dz_relu({x}, {yt[0].numel()}, {y});")
        return y
    if fname in ("add", "__add__", "__iadd__", "add_", "__radd__") and len(ins) == 2 and \
            ins[0].shape == ins[1].shape == yt.shape and "alpha" not in ev.kwargs:
        y = p.buf(yt)
        p.body.append(f"dz_add({x}, {p.names[id(ins[1])]}, {yt[0].numel()}, {y});")
        return y
    if fname == "mean" and ins[0].dim() == 4 and yt.dim() == 2:
        C, H, W = _geom(ins[0])
        y = p.buf(yt)
        p.body.append(f"dz_global_avg({x}, {C}, {H * W}, {y});")
        return y
    raise _fail(ev)


def generate(model: nn.Module, example: torch.Tensor) -> tuple[str, int, int, tuple[int, ...]]:
    """(C source, input floats per sample, output floats per sample, output shape per sample)."""
    if isinstance(example, tuple):
        if len(example) != 1:
            raise UnsupportedLayerError("C export supports models with one input tensor")
        example = example[0]
    x = example[:1].float().contiguous()
    tr = trace(model, x, is_atomic=is_atomic, is_rule=has_rule)
    p = _Program()
    p.bufs.append(f"static float b_in[{max(1, x.numel())}];")
    p.names[id(tr.inputs[0])] = "b_in"
    for ev in tr.events:
        if ev.kind == "inner":
            continue
        yt = first_tensor(ev.output)
        if ev.kind == "module":
            xt = first_tensor(ev.args) if ev.args else first_tensor(ev.kwargs)
            if xt is None or id(xt) not in p.names:
                raise _fail(ev, "input is not a traced activation")
            y = _lower_module(p, ev, p.names[id(xt)], xt, yt)
        else:
            y = _lower_function(p, ev, yt)
        p.names[id(yt)] = y
    out = first_tensor(tr.output)
    if out is None or id(out) not in p.names:
        raise UnsupportedLayerError("C export: the model output was not produced by a lowered op")
    n_in, n_out = x.numel(), out[0].numel()
    src = "\n".join([
        "/* generated by dnnzip (dnnzip.export.c); float32, one sample per iteration */",
        '#include "dnnzip_kernels.h"', "",
        *p.consts, "", *p.bufs, "",
        f"const int dnnzip_input_size = {n_in};", f"const int dnnzip_output_size = {n_out};", "",
        "int dnnzip_forward(const float *input, float *output, int batch) {",
        "    for (int n = 0; n < batch; ++n) {",
        f"        memcpy(b_in, input + (long)n * {n_in}, sizeof(float) * {n_in});",
        *("        " + line for line in p.body),
        f"        memcpy(output + (long)n * {n_out}, {p.names[id(out)]}, sizeof(float) * {n_out});",
        "    }", "    return 0;", "}", ""])
    return src, n_in, n_out, tuple(out.shape[1:])


def export_c(model: nn.Module, example: torch.Tensor, output: str | os.PathLike) -> Path:
    """Write ``output`` (.c) plus ``dnnzip_kernels.h`` and a ``.h`` declaring the entry point
    next to it (atomic writes). Returns the path of the .c file."""
    out = Path(output)
    if out.suffix != ".c":
        out = out.with_suffix(".c")
    out.parent.mkdir(parents=True, exist_ok=True)
    src, n_in, n_out, _ = generate(model, example)
    header = (f"#ifndef DNNZIP_MODEL_H\n#define DNNZIP_MODEL_H\n/* input {n_in} floats, output "
              f"{n_out} floats per sample */\nint dnnzip_forward(const float *input, float "
              f"*output, int batch);\n#endif\n")
    for path, text in ((out.with_name("dnnzip_kernels.h"), KERNELS.read_text()),
                       (out.with_suffix(".h"), header), (out, src)):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return out
