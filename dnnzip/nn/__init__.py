"""Module structure as data: describe a model's module tree as JSON and rebuild it without pickle."""
from dnnzip.nn.spec import build_module, describe, rebuild_into, spec_module

__all__ = ["build_module", "describe", "rebuild_into", "spec_module"]
