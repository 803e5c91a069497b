"""Pack a model into a ``.dnz`` artifact and unpack it again, without pickle.

``pack`` stores the model reference (zoo name + JSON kwargs, a user builder, or "needs a
template"), the module tree (``dnnzip.nn.spec.describe``) and every ``state_dict`` tensor through
its encoding. Per tensor, the encoding comes from the ``encodings`` argument (exact key, else the
first matching ``re:`` pattern), else from the owning module's ``dnnzip_encodings()`` hint, else
the smallest lossless encoding (``dnnzip.artifact.choose``). ``unpack`` rebuilds the base model, reshapes it with ``rebuild_into`` and loads the decoded
tensors with ``strict=True``; for lossless encodings every tensor comes back bit for bit.
"""
from __future__ import annotations

import copy
import os
import re
from typing import Any

import numpy as np
import torch
from torch import nn

import dnnzip
from dnnzip.artifact import choose
from dnnzip.artifact import format as fmt
from dnnzip.artifact.encodings import FLOATS, get_encoding, work_dtype
from dnnzip.errors import ConfigError, DataError, DnnzipError, FormatError
from dnnzip.nn.spec import describe, rebuild_into

_TORCH_DTYPES = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16",
                 torch.bfloat16: "bfloat16", torch.int8: "int8", torch.uint8: "uint8",
                 torch.int16: "int16", torch.int32: "int32", torch.int64: "int64",
                 torch.bool: "bool"}
_BY_NAME = {v: k for k, v in _TORCH_DTYPES.items()}


def _spec(value: Any, where: str) -> tuple[str, dict]:
    if isinstance(value, str):
        return value, {}
    if isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[0], str) \
            and isinstance(value[1], dict):
        return value[0], dict(value[1])
    raise ConfigError(f"encoding for {where} must be a name or (name, options), got {value!r}")


def _hints(model: nn.Module) -> dict[str, tuple[str, dict]]:
    out = {}
    for prefix, module in model.named_modules():
        fn = getattr(module, "dnnzip_encodings", None)
        if callable(fn):
            for local, value in (fn() or {}).items():
                key = f"{prefix}.{local}" if prefix else local
                out[key] = _spec(value, f"'{key}' (hint of {type(module).__name__})")
    return out


def _choose(key: str, encodings: dict | None, hints: dict) -> tuple[str, dict]:
    if encodings:
        if key in encodings:
            return _spec(encodings[key], f"'{key}'")
        for pattern, value in encodings.items():
            if pattern.startswith("re:") and re.fullmatch(pattern[3:], key):
                return _spec(value, f"'{key}' (pattern {pattern!r})")
    return hints.get(key, ("auto", {}))


def _check_ref(ref: Any) -> dict:
    if isinstance(ref, dict) and ref.get("structure") is True:
        return ref  # rebuilt from the module tree alone (every class in it is registered)
    if not isinstance(ref, dict) or not ({"zoo", "builder", "template"} & set(ref)):
        raise ConfigError(
            "the model has no _dnnzip_ref (it was not built by dnnzip.zoo.build), so an "
            "artifact could not rebuild it; pass ref={'builder': 'pkg.mod:fn', 'kwargs': {...}} "
            "or ref={'template': 'MyNet'} and unpack with template=<an instance>")
    return ref


def _numpy(key: str, tensor: torch.Tensor, enc_name: str) -> tuple[str, np.ndarray]:
    if not isinstance(tensor, torch.Tensor):
        raise FormatError(f"state_dict entry '{key}' is a {type(tensor).__name__}, not a tensor; "
                          "keep module state in parameters or buffers")
    t = tensor.detach().cpu().contiguous()
    if t.dtype not in _TORCH_DTYPES or t.is_quantized or t.is_sparse:
        raise FormatError(f"tensor '{key}' has dtype {t.dtype}, which .dnz does not store; "
                          f"supported: {', '.join(_BY_NAME)}")
    name = _TORCH_DTYPES[t.dtype]
    if name in FLOATS and not bool(torch.isfinite(t).all()):
        raise DataError(f"tensor '{key}' holds NaN or infinite values; fix the model (e.g. "
                        "retrain with a lower learning rate) before packing")
    if name == "bfloat16":
        arr = t.view(torch.int16).numpy() if enc_name == "raw" else t.float().numpy()
    else:
        arr = t.numpy()
    return name, arr


def pack(model: nn.Module, path: str | os.PathLike, *, encodings: dict | None = None,
         meta: dict | None = None, ref: dict | None = None) -> int:
    """Write ``model`` to ``path`` atomically; returns the bytes written.

    encodings: {state_dict key or "re:pattern": name or (name, options)}; overrides module hints.
    meta: free JSON stored as manifest ``meta`` (recipe, metrics, sparsity...).
    ref: how to rebuild the model, overriding ``model._dnnzip_ref``.
    """
    ref = _check_ref(copy.deepcopy(ref if ref is not None else getattr(model, "_dnnzip_ref", None)))
    hints = _hints(model)
    tensors, streams = {}, {}
    for key, tensor in model.state_dict().items():
        enc_name, opts = _choose(key, encodings, hints)
        dtype, arr = _numpy(key, tensor, "raw" if enc_name == "auto" else enc_name)
        try:
            if enc_name == "auto":  # no one chose: the smallest lossless encoding
                enc_name, opts, local, tmeta = choose.smallest(  # bfloat16 differs per encoding
                    arr, lambda n, a, o: get_encoding(n).encode(_numpy(key, tensor, n)[1], **o))
            else:
                local, tmeta = get_encoding(enc_name).encode(arr, **opts)
        except (DataError, ConfigError) as exc:
            raise type(exc)(f"tensor '{key}' ({enc_name}): {exc}") from None
        names = sorted(f"{key}/{s}" for s in local)
        streams.update({f"{key}/{s}": bytes(v) for s, v in local.items()})
        tensors[key] = {"dtype": dtype, "shape": list(tensor.shape), "encoding": enc_name,
                        "meta": tmeta, "streams": names}
    manifest = {"format": fmt.FORMAT, "version": fmt.VERSION, "dnnzip_version": dnnzip.__version__,
                "model": ref, "structure": describe(model), "tensors": tensors,
                "meta": dict(meta or {})}
    fmt.dumps(manifest)  # non-JSON meta fails here, before anything touches the disk
    return fmt.write_container(path, streams, manifest)


def read_manifest(path: str | os.PathLike) -> dict:
    """The validated manifest of an artifact (streams checked, nothing decoded)."""
    return fmt.read_container(path)[0]


def _base(ref: dict, template: nn.Module | None, trust_builder: bool, where: str) -> nn.Module:
    if template is not None:
        return copy.deepcopy(template)
    if ref.get("structure") is True:
        return nn.Module()  # rebuild_into then builds the whole recorded tree
    if "template" in ref and not ({"zoo", "builder"} & set(ref)):
        raise ConfigError(f"{where} was packed from a model without a zoo reference "
                          f"({ref.get('template')!r}); pass template=<an instance of it>")
    if "builder" in ref and "zoo" not in ref and not trust_builder:
        raise ConfigError(f"{where} names the user builder {ref['builder']!r}, which would run "
                          "its code; pass trust_builder=True (--builder) if you trust it, or "
                          "template=<an instance>")
    from dnnzip import zoo

    try:
        return zoo.from_ref(ref, trust_builder=trust_builder)
    except Exception as exc:  # unknown name, bad kwargs: the file is wrong, not the caller
        raise FormatError(f"{where}: manifest key 'model' cannot be built: {exc}") from exc


def _check_structure(node: Any, where: str, path: str = "structure", depth: int = 0) -> None:
    """The module tree must be {"cls": str | None, "kwargs": {...}, "children": {...}}."""
    if depth > 64:
        raise FormatError(f"{where}: manifest key {path!r} nests deeper than 64 modules")
    if not isinstance(node, dict) or not isinstance(node.get("kwargs", {}), dict) \
            or not isinstance(node.get("cls"), (str, type(None))) \
            or not isinstance(node.get("children", {}), dict) \
            or set(node) - {"cls", "kwargs", "children"}:
        raise FormatError(f"{where}: manifest key {path!r} must be an object with 'cls' (string "
                          "or null), 'kwargs' (object) and optional 'children' (object)")
    for name, child in node.get("children", {}).items():
        _check_structure(child, where, f"{path}.{name}", depth + 1)


def _rebuild(base: nn.Module, structure: dict, where: str) -> nn.Module:
    try:
        return rebuild_into(base, structure)
    except DnnzipError:
        raise
    except Exception as exc:  # noqa: BLE001 - recorded kwargs a constructor rejects
        raise FormatError(f"{where}: manifest key 'structure' cannot be rebuilt: "
                          f"{type(exc).__name__}: {str(exc)[:200]}") from exc


def _dry_run(ref, template, trust_builder, structure, tensors, where) -> None:
    """Build the model on the meta device first, so that recorded sizes cannot make us
    allocate memory, and compare its state_dict with the manifest before decoding."""
    try:
        with torch.device("meta"):
            if template is not None:
                probe = copy.deepcopy(template).to("meta")
            else:
                probe = _base(ref, None, trust_builder, where)
            probe = _rebuild(probe, structure, where)
    except DnnzipError:
        raise
    except Exception:  # noqa: BLE001 - a builder that cannot run on the meta device
        return
    total = sum(t.numel() * t.element_size()
                for t in list(probe.parameters()) + list(probe.buffers()))
    if total > fmt.MAX_DECODED_BYTES:
        raise FormatError(f"{where}: manifest key 'structure' builds a model of {total} bytes, "
                          f"over the {fmt.MAX_DECODED_BYTES}-byte limit")
    _compare(probe.state_dict(), tensors, where)


def _compare(state: dict, tensors: dict, where: str) -> None:
    missing = sorted(set(state) - set(tensors))
    extra = sorted(set(tensors) - set(state))
    if missing or extra:
        raise FormatError(f"{where}: manifest key 'tensors' does not match the rebuilt model: "
                          f"missing {missing[:5]}, unexpected {extra[:5]}")
    for k, v in state.items():
        if list(v.shape) != tensors[k]["shape"] or _TORCH_DTYPES.get(v.dtype) != tensors[k]["dtype"]:
            raise FormatError(f"{where}: tensor {k!r} is {tensors[k]['dtype']}{tensors[k]['shape']} "
                              f"in the manifest but {v.dtype}{list(v.shape)} in the rebuilt model")


def unpack(path: str | os.PathLike, *, template: nn.Module | None = None,
           trust_builder: bool = False) -> nn.Module:
    """Rebuild the packed model (eval mode). ``template`` replaces the recorded base model (it
    is copied, not modified); ``trust_builder`` allows running a recorded user builder."""
    from dnnzip.registry import load_builtin_techniques

    load_builtin_techniques()  # custom module classes register their specs on import
    where = f"'{path}'"
    manifest, streams = fmt.read_container(path)
    ref, structure, tensors = manifest["model"], manifest["structure"], manifest["tensors"]
    _check_structure(structure, where)
    state = {}
    for key, entry in tensors.items():
        arr = fmt.decode_tensor(key, entry, streams, where)
        t = torch.from_numpy(np.ascontiguousarray(arr))
        if entry["dtype"] == "bfloat16":
            t = t.view(torch.bfloat16) if entry["encoding"] == "raw" else t.to(torch.bfloat16)
        state[key] = t.to(_BY_NAME[entry["dtype"]]) if t.dtype != _BY_NAME[entry["dtype"]] else t
    _dry_run(ref, template, trust_builder, structure, tensors, where)
    model = _rebuild(_base(ref, template, trust_builder, where), structure, where)
    _compare(model.state_dict(), tensors, where)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise FormatError(f"{where}: tensors do not fit the rebuilt model: {exc}") from None
    model._dnnzip_ref = copy.deepcopy(ref)
    return model.eval()


__all__ = ["pack", "unpack", "read_manifest", "work_dtype"]
