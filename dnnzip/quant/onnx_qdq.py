"""Export a ``quant.int8`` model to an ONNX QDQ graph with dnnzip's own scales.

Each int8 layer becomes ``QuantizeLinear -> DequantizeLinear`` on its input, ``DequantizeLinear``
of the stored int8 weights (per-channel, axis 0) and of an int32 bias (scale = input scale x
weight scale), the float op, the fused ReLU, and ``QuantizeLinear -> DequantizeLinear`` on its
output. ONNX Runtime's QDQ transformers fuse these node groups into integer kernels
(QLinearConv, QGemm / QLinearMatMul, MatMulIntegerToFloat...); ``int8_ops`` reads the optimized
graph back so callers can check that integer kernels actually run.

The QDQ nodes come from three tiny ``torch.library`` ops translated by the dynamo exporter's
``custom_translation_table``, so the numbers in the graph are exactly the module's buffers.
"""
from __future__ import annotations

import copy
import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dnnzip.errors import ConfigError, UnsupportedLayerError

INT8_KERNELS = {"QLinearConv", "QLinearMatMul", "QGemm", "MatMulInteger", "ConvInteger",
                "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QLinearAdd", "QAttention"}


@torch.library.custom_op("dnnzip::qdq_u8", mutates_args=())
def _qdq_u8(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, 255)


@_qdq_u8.register_fake
def _(x, scale, zero_point):
    return torch.empty_like(x)


@torch.library.custom_op("dnnzip::dq_axis0", mutates_args=())
def _dq_axis0(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.to(torch.float32) * scale.reshape([-1] + [1] * (q.dim() - 1))


@_dq_axis0.register_fake
def _(q, scale):
    return torch.empty(q.shape, dtype=torch.float32)


def _translations():
    from onnxscript import opset18 as op

    def qdq_u8(x, scale: float, zero_point: int):
        s = op.Constant(value_float=scale)
        z = op.Cast(op.Constant(value_int=zero_point), to=2)  # UINT8
        return op.DequantizeLinear(op.QuantizeLinear(x, s, z), s, z)

    def dq_axis0(q, scale):
        return op.DequantizeLinear(q, scale, axis=0)

    return {torch.ops.dnnzip.qdq_u8.default: qdq_u8, torch.ops.dnnzip.dq_axis0.default: dq_axis0}


def export_forward(mod: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The forward of an int8 layer while exporting (constants were prepared by ``_prepare``)."""
    c = mod._export_consts
    as_conv = mod.kind == "linear" and x.dim() == 2  # per-channel QGemm does not fuse in ORT
    weight = mod.weight
    if as_conv:  # Linear as a 1x1 Conv so ORT runs QLinearConv with per-channel scales
        x = x.reshape(x.shape[0], -1, 1, 1)
        weight = weight.reshape(*weight.shape, 1, 1)
    if c["quant_in"]:
        x = _qdq_u8(x, c["in_scale"], c["in_zp"])
    w = _dq_axis0(weight, mod.weight_scale)
    # the bias scale is computed in the graph from the weight scales: no duplicate initializer
    b = (_dq_axis0(c["bias_q"], mod.weight_scale * c["in_scale"]) if c["bias_q"] is not None
         else mod.bias)
    y = torch.nn.functional.conv2d(x, w, b) if as_conv else mod.op(x, w, b)
    if mod.relu:
        y = torch.relu(y)
    if c["quant_out"]:
        y = _qdq_u8(y, c["out_scale"], c["out_zp"])
    return y.reshape(y.shape[0], -1) if as_conv else y


def _prepare(model: nn.Module) -> int:
    from dnnzip.quant.modules import Int8Layer

    n = 0
    for mod in model.modules():
        if isinstance(mod, Int8Layer):
            q_in = bool(mod.quant_input and mod.act_bits)
            q_out = bool(mod.quant_output and mod.act_bits)
            if mod.act_bits not in (0, 8):
                raise ConfigError(f"int8 export needs 8-bit activations, got {mod.act_bits}")
            bias_q = mod.bias_int32() if (mod.bias is not None and q_in) else None
            mod._export_consts = dict(
                quant_in=q_in, quant_out=q_out,
                in_scale=float(mod.in_scale), in_zp=int(mod.in_zp),
                out_scale=float(mod.out_scale), out_zp=int(mod.out_zp),
                bias_q=bias_q)
            mod._export = True
            n += 1
    return n


@dataclass(frozen=True)
class ExportInfo:
    path: str
    bytes: int
    graph_ops: dict[str, int]      # node types of the exported QDQ graph
    runtime_ops: dict[str, int]    # node types after ONNX Runtime's optimizations
    int8_ops: dict[str, int]       # the integer kernels among runtime_ops


def export_int8(model: nn.Module, example: torch.Tensor, path: str | os.PathLike, *,
                opset: int = 18) -> ExportInfo:
    """Write ``model`` (output of ``quant.int8``) as an ONNX QDQ graph at ``path``.

    Raises ConfigError if the model has no int8 layers, UnsupportedLayerError naming the op the
    exporter could not translate.
    """
    model = copy.deepcopy(model).eval()
    if _prepare(model) == 0:
        raise ConfigError("export_int8: the model has no int8 layers; apply 'quant.int8' first "
                          "(dnnzip.registry.apply('quant.int8', model, ctx=...)).")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        prog = torch.onnx.export(model, (example,), dynamo=True, opset_version=opset,
                                 custom_translation_table=_translations(), verbose=False,
                                 input_names=["input"], output_names=["output"],
                                 dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
        tmp = path.with_suffix(path.suffix + ".tmp")
        prog.save(str(tmp), external_data=False)
        strip(tmp)
        share_bias_scales(tmp)
        compact(tmp)
        os.replace(tmp, path)
    except Exception as exc:
        raise UnsupportedLayerError(_export_message(exc)) from exc
    graph = op_types(path)
    runtime = runtime_op_types(path)
    return ExportInfo(str(path), path.stat().st_size, graph, runtime,
                      {k: v for k, v in runtime.items() if k in INT8_KERNELS})


def _export_message(exc: Exception) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    m = re.search(r"(aten[:.]{1,2}[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?)", text)
    op = m.group(1) if m else None
    if op:
        return (f"ONNX int8 export failed: op '{op}' has no ONNX translation. Replace it in the "
                "model's forward with exportable ops, or keep this model on the torch runtime.")
    first = text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__
    return (f"ONNX int8 export failed ({type(exc).__name__}: {first}); a layer with no ONNX "
            "rule can be kept in float with quant.int8's ignore=.")


def strip(path: str | os.PathLike) -> None:
    """Drop the exporter's per-node metadata (stack traces, names) and value_info in place:
    tens of KB on a small model, and nothing ONNX Runtime needs."""
    import onnx
    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del model.graph.value_info[:]
    del model.metadata_props[:]
    model.doc_string = ""
    onnx.save(model, str(path))


def share_bias_scales(path: str | os.PathLike) -> int:
    """Replace each bias DequantizeLinear's stored scale (= input scale x weight scales, a copy
    of data already in the file) by a ``Mul`` of the two; ONNX Runtime folds it at load time.
    Returns how many scales were replaced."""
    import onnx
    from onnx import helper, numpy_helper
    model = onnx.load(str(path))
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, int] = Counter(i for n in g.node for i in n.input)
    done, new_nodes = 0, []
    for node in g.node:
        if node.op_type != "Conv" or len(node.input) < 3:
            continue
        x_dq, w_dq, b_dq = (producer.get(i) for i in node.input[:3])
        if not all(d is not None and d.op_type == "DequantizeLinear" for d in (x_dq, w_dq, b_dq)):
            continue
        b_scale = b_dq.input[1]
        if b_scale not in inits or consumers[b_scale] != 1 or w_dq.input[1] not in inits:
            continue
        expect = (numpy_helper.to_array(inits[w_dq.input[1]]).astype("float32")
                  * numpy_helper.to_array(inits[x_dq.input[1]]).astype("float32")
                  if x_dq.input[1] in inits else None)
        if expect is None or not (numpy_helper.to_array(inits[b_scale]) == expect).all():
            continue
        out = b_scale + "_from_mul"
        new_nodes.append(helper.make_node("Mul", [w_dq.input[1], x_dq.input[1]], [out]))
        b_dq.input[1] = out
        g.initializer.remove(inits.pop(b_scale))
        done += 1
    for n in reversed(new_nodes):
        g.node.insert(0, n)
    onnx.save(model, str(path))
    return done


def compact(path) -> int:
    """Shorten the graph's internal tensor names, drop node names and attributes that equal their
    ONNX defaults, in place; returns bytes saved. The graph's inputs and outputs keep their names;
    ONNX Runtime sees the same computation (tested against the uncompacted graph)."""
    import onnx
    before = os.path.getsize(path)
    model = onnx.load(str(path))
    g = model.graph
    keep = {v.name for v in g.input} | {v.name for v in g.output}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        if name not in names:
            n, s = len(names), ""
            while True:
                n, r = divmod(n, 36)
                s += "0123456789abcdefghijklmnopqrstuvwxyz"[r]
                if n == 0:
                    break
            names[name] = "_" + s
        return names[name]

    rank0 = {t.name for t in g.initializer if len(t.dims) == 0}
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name in ("value_float", "value_int") or (a.name == "value" and len(a.t.dims) == 0):
                    rank0.update(node.output)
    _drop_repeated_qdq(g)
    defaults = {"dilations": 1, "strides": 1, "group": 1, "pads": 0, "storage_order": 0,
                "ceil_mode": 0, "allowzero": 0}
    for node in g.node:
        node.name = ""
        drop = []
        for a in node.attribute:
            if node.op_type in ("Conv", "MaxPool", "Reshape") and a.name in defaults:
                vals = list(a.ints) if a.type == onnx.AttributeProto.INTS else [a.i]
                if all(v == defaults[a.name] for v in vals):
                    drop.append(a)
            elif node.op_type in ("Conv", "MaxPool") and a.name == "auto_pad" and a.s == b"NOTSET":
                drop.append(a)
            elif (node.op_type in ("QuantizeLinear", "DequantizeLinear") and a.name == "axis"
                  and len(node.input) > 1 and node.input[1] in rank0):
                drop.append(a)
        for a in drop:
            node.attribute.remove(a)
    for node in g.node:
        for i, n in enumerate(node.input):
            node.input[i] = short(n)
        for i, n in enumerate(node.output):
            node.output[i] = short(n)
    for t in g.initializer:
        t.name = short(t.name)
    onnx.save(model, str(path))
    return before - os.path.getsize(path)


def _drop_repeated_qdq(g) -> int:
    """Remove a ``QuantizeLinear -> DequantizeLinear`` pair that directly repeats the pair before
    it with the same scale and zero point (a layer's output quantizer followed by the next
    layer's input quantizer): quantizing an already quantized value again is the identity."""
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_out = {v.name for v in g.output}
    removed = []
    for q2 in list(g.node):
        if q2.op_type != "QuantizeLinear" or len(q2.input) < 3:
            continue
        dq1 = producer.get(q2.input[0])
        if dq1 is None or dq1.op_type != "DequantizeLinear" or len(dq1.input) < 3:
            continue
        if list(dq1.input[1:3]) != list(q2.input[1:3]) or dq1.attribute or q2.attribute:
            continue
        outs = consumers.get(q2.output[0], [])
        if len(outs) != 1 or outs[0].op_type != "DequantizeLinear":
            continue
        dq2 = outs[0]
        if list(dq2.input[1:3]) != list(q2.input[1:3]) or dq2.attribute or dq2.output[0] in graph_out:
            continue
        for n in consumers.get(dq2.output[0], []):
            for i, name in enumerate(n.input):
                if name == dq2.output[0]:
                    n.input[i] = dq1.output[0]
        removed += [q2, dq2]
    for n in removed:
        g.node.remove(n)
    return len(removed) // 2


def op_types(path: str | os.PathLike) -> dict[str, int]:
    import onnx
    return dict(Counter(n.op_type for n in onnx.load(str(path)).graph.node))


def session(path: str | os.PathLike, *, threads: int = 1, optimized_path: str | None = None):
    """An ONNX Runtime CPU session with all graph optimizations and ``threads`` threads."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def runtime_op_types(path: str | os.PathLike) -> dict[str, int]:
    """Node types of the graph ONNX Runtime actually executes (its optimized model)."""
    with tempfile.TemporaryDirectory() as d:
        opt = os.path.join(d, "optimized.onnx")
        session(path, optimized_path=opt)
        return op_types(opt)
