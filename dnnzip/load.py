"""Resolve a MODEL argument: a zoo name, a ``.dnz`` artifact, or a weights file.

Weights written by ``dnnzip train`` are safetensors carrying the zoo reference in their
metadata, so they rebuild on their own; other weights files need ``arch`` (a zoo name or a
``pkg.module:build`` builder). Nothing is unpickled unless ``trust_pickle`` is set.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from dnnzip.errors import ConfigError, FormatError

REF_KEY = "dnnzip_model"


def build_from_ref(ref: dict[str, Any]) -> nn.Module:
    from dnnzip import zoo

    if not isinstance(ref, dict):
        raise FormatError(f"model reference must be an object, got {type(ref).__name__}")
    kwargs = ref.get("kwargs") or {}
    if "zoo" in ref:
        return zoo.build(ref["zoo"], **kwargs)
    if "builder" in ref:
        from dnnzip.zoo.builder import build_user
        return build_user(ref["builder"], **kwargs)
    raise FormatError("model reference names neither a zoo model nor a builder")


def _arch_ref(arch: str, kwargs: dict | None) -> dict:
    return {"builder": arch, "kwargs": kwargs or {}} if ":" in arch else \
        {"zoo": arch, "kwargs": kwargs or {}}


def load_model(spec: str | os.PathLike, *, arch: str | None = None, kwargs: dict | None = None,
               trust_pickle: bool = False) -> nn.Module:
    """Return an ``nn.Module`` (eval mode) for a zoo name, an artifact or a weights file."""
    from dnnzip import zoo

    s = str(spec)
    p = Path(s)
    if not p.exists():
        if s in zoo.names():
            return zoo.build(s, **(kwargs or {})).eval()
        if ":" in s and not s.endswith((".dnz", ".safetensors", ".pt", ".pth")):
            return build_from_ref(_arch_ref(s, kwargs)).eval()
        raise ConfigError(f"model {s!r} is neither a file nor a zoo model; zoo models: "
                          f"{', '.join(zoo.names())}")
    if p.suffix == ".dnz":
        from dnnzip.artifact import unpack
        return unpack(p)
    from dnnzip.artifact.weights import load_weights

    ref = None
    if p.suffix == ".safetensors":
        from safetensors import safe_open
        try:
            with safe_open(str(p), framework="pt") as f:
                meta = f.metadata() or {}
        except Exception as exc:  # noqa: BLE001 - safetensors raises several types
            raise FormatError(f"{str(p)!r} is not a valid safetensors file: {exc}") from exc
        if REF_KEY in meta:
            try:
                ref = json.loads(meta[REF_KEY])
            except json.JSONDecodeError as exc:
                raise FormatError(f"{str(p)!r}: metadata {REF_KEY!r} is not JSON") from exc
    if arch is not None:
        ref = _arch_ref(arch, kwargs)
    loaded = load_weights(p, trust_pickle=trust_pickle)
    if isinstance(loaded, nn.Module):
        return loaded.eval()
    if ref is None:
        raise ConfigError(f"{str(p)!r} holds weights but no architecture; pass --arch NAME "
                          f"(a zoo model: {', '.join(zoo.names())}, or pkg.module:build)")
    model = build_from_ref(ref)
    try:
        model.load_state_dict(loaded, strict=True)
    except RuntimeError as exc:
        raise FormatError(f"weights in {str(p)!r} do not fit {ref}: {str(exc).splitlines()[0]}; "
                          "check --arch and its kwargs") from exc
    return model.eval()


def save_trained(model: nn.Module, path: str | os.PathLike) -> int:
    """Save weights as safetensors with the zoo reference in the metadata. Returns bytes."""
    from dnnzip.artifact.weights import save_weights

    ref = getattr(model, "_dnnzip_ref", None)
    meta = {REF_KEY: json.dumps(ref, sort_keys=True)} if ref else {}
    save_weights(model.state_dict(), path, metadata=meta)
    return os.path.getsize(path)


def kwargs_for_data(name: str, data) -> dict[str, Any]:
    """Zoo kwargs that fit ``data``'s input geometry and class count (only those the model takes)."""
    from dnnzip import zoo

    accepted = zoo.options(name)
    shape = tuple(data.input_shape)
    kw: dict[str, Any] = {"num_classes": int(data.num_classes), "in_channels": int(shape[0])}
    if len(shape) == 3:
        kw["input_size"] = [int(shape[1]), int(shape[2])] if shape[1] != shape[2] else int(shape[1])
    elif len(shape) == 2:
        kw["length"] = int(shape[1])
    return {k: v for k, v in kw.items() if k in accepted}
