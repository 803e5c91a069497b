"""Load and save user weights safely.

``.safetensors`` files are plain tensors. ``.pt``/``.pth`` files are pickles, which can run code
on load, so they go through ``torch.load(weights_only=True)`` (tensors, dicts, lists only); a
pickled whole module, or anything else that restricted loader refuses, needs the explicit
``trust_pickle=True`` opt-in (``--trust-pickle`` on the command line).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dnnzip.artifact.format import atomic_write
from dnnzip.errors import DataError, FormatError


def _check(state: dict, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict):
        raise FormatError(f"{where} holds a {type(state).__name__}, expected a state_dict "
                          "(a dict of tensor names to tensors)")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise FormatError(f"{where}: key {key!r} is invalid, expected a str name and a "
                              f"torch.Tensor but received {type(value).__name__}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise DataError(f"{where}: tensor {key!r} holds NaN or infinite values")
    return state


def _unwrap(obj: Any) -> Any:
    """Accept the common checkpoint shape {"state_dict": {...}} as well as a bare state_dict."""
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        return obj["state_dict"]
    return obj


def load_weights(path: str | os.PathLike, *, trust_pickle: bool = False) -> dict | nn.Module:
    """A state_dict from ``.safetensors`` / ``.pt`` / ``.pth``; with ``trust_pickle`` a pickled
    ``nn.Module`` is returned as is."""
    p = Path(path)
    where = f"'{p}'"
    if not p.is_file():
        raise FormatError(f"{where}: no such weights file")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(p))
        except Exception as exc:  # noqa: BLE001 - safetensors raises several error types
            raise FormatError(f"{where} is not a valid safetensors file: {exc}") from None
        return _check(state, where)
    if p.suffix not in (".pt", ".pth"):
        raise FormatError(f"{where}: unknown weights format {p.suffix!r}; expected .safetensors, "
                          ".pt or .pth")
    if not trust_pickle:
        try:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError...
            raise FormatError(
                f"{where} is not a plain state_dict (torch.load(weights_only=True) refused it: "
                f"{str(exc).splitlines()[0][:160]}). If it is a pickled model from a source you "
                "trust, pass --trust-pickle (trust_pickle=True); unpickling runs its code."
            ) from None
        return _check(_unwrap(obj), where)
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise FormatError(f"{where} cannot be unpickled: {exc}") from None
    if isinstance(obj, nn.Module):
        _check(obj.state_dict(), where)
        return obj
    return _check(_unwrap(obj), where)


def save_weights(state_dict: dict[str, torch.Tensor], path: str | os.PathLike,
                 metadata: dict[str, str] | None = None) -> int:
    """Write a state_dict as safetensors atomically; returns the bytes written."""
    from safetensors.torch import save

    state = _check(dict(state_dict), f"'{path}'")
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in sorted(state.items())}
    return atomic_write(path, save(tensors, metadata=metadata))
