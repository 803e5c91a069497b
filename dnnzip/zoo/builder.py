"""User architectures as importable builders: ``"pkg.module:function"`` plus JSON kwargs.

The builder is found by *name only*: the module is imported with ``importlib`` from the normal
``sys.path`` (no file paths, no ``exec``), the attribute must be a plain Python function or class,
and its result must be an ``nn.Module``. Standard-library modules are refused, so a manifest can
never name ``os:system`` or ``subprocess:run``. Loading a builder still runs the user's code, which
is why ``dnnzip.zoo.from_ref`` only follows a builder reference when the caller trusts it.
"""
from __future__ import annotations

import importlib
import inspect
import re
import sys
from typing import Any, Callable

from torch import nn

from dnnzip.errors import ConfigError

_IDENT = r"[A-Za-z][A-Za-z0-9_]*"
_SPEC = re.compile(rf"^({_IDENT}(?:\.{_IDENT})*):({_IDENT})$")
# Never builders: the standard library and libraries whose functions load or run files/code
# (``torch:load``, ``numpy:load(allow_pickle=True)``, ``yaml:unsafe_load``). Not a sandbox: the
# real guard is that a builder named inside a file is only followed on the user's say-so.
_REFUSED = frozenset(sys.stdlib_module_names) | {
    "builtins", "torch", "numpy", "pandas", "joblib", "dill", "cloudpickle", "yaml", "pytest",
    "dnnzip.zoo.builder"}


def parse_spec(spec: Any) -> tuple[str, str]:
    """Split ``"pkg.module:function"``; anything else is a ConfigError."""
    match = _SPEC.match(spec) if isinstance(spec, str) else None
    if match is None:
        raise ConfigError(
            f"builder {spec!r} is not of the form 'pkg.module:function' (dotted module name, "
            "one colon, a public function name; no file paths, no leading underscores); e.g. "
            "'mypkg.models:build'"
        )
    module, attr = match.groups()
    parts = module.split(".")
    if any(".".join(parts[:i]) in _REFUSED for i in range(1, len(parts) + 1)):
        raise ConfigError(
            f"builder {spec!r} names module {module!r} of the standard library or a system "
            "package; a builder must be a function in your own package that returns an nn.Module"
        )
    return module, attr


def load_builder(spec: str) -> Callable[..., nn.Module]:
    """Import and return the builder callable named by ``spec``."""
    module_name, attr = parse_spec(spec)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"builder {spec!r}: cannot import module {module_name!r} ({exc}); install the "
            "package or add its folder to PYTHONPATH"
        ) from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise ConfigError(f"builder {spec!r}: module {module_name!r} has no attribute {attr!r}")
    if not (inspect.isfunction(fn) or inspect.isclass(fn)):
        raise ConfigError(
            f"builder {spec!r}: {attr!r} is a {type(fn).__name__}, expected a Python function "
            "or class returning an nn.Module"
        )
    return fn


def _check_kwargs(spec: str, fn: Callable, kwargs: dict[str, Any]) -> None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    params = sig.parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    valid = [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ConfigError(
            f"builder {spec!r} has no option(s) {', '.join(map(repr, unknown))}; valid options "
            f"are: {', '.join(valid) or '(none)'}."
        )
    missing = [p.name for p in params if p.default is p.empty and p.name not in kwargs
               and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if missing:
        raise ConfigError(f"builder {spec!r} needs option(s) {', '.join(map(repr, missing))}")


def build_user(spec: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Call builder ``spec`` with JSON ``kwargs``; the model carries
    ``_dnnzip_ref = {"builder": spec, "kwargs": kwargs}``."""
    from dnnzip.zoo import _json_kwargs

    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ConfigError(f"builder {spec!r}: kwargs must be a JSON object, got {kwargs!r}")
    fn = load_builder(spec)
    kwargs = _json_kwargs(f"builder {spec!r}", kwargs)
    _check_kwargs(spec, fn, kwargs)
    model = fn(**kwargs)
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"builder {spec!r} returned a {type(model).__name__}, expected a torch nn.Module"
        )
    model._dnnzip_ref = {"builder": spec, "kwargs": kwargs}
    return model
