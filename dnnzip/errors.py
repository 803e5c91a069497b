"""Error types. Every user-facing failure is one of these; the CLI maps them to exit codes.

Messages follow the house shape: what, where, expected, got, fix.
"""
from __future__ import annotations


class DnnzipError(Exception):
    """Base of all dnnzip errors. ``exit_code`` is what the CLI returns."""

    exit_code = 2


class ConfigError(DnnzipError, ValueError):
    """A configuration value (technique option, budget, recipe) is invalid."""


class DataError(DnnzipError, ValueError):
    """A dataset is missing, corrupt, empty, or has the wrong shape."""


class FormatError(DnnzipError, ValueError):
    """A file (artifact, weights, IDX) is malformed or inconsistent."""


class UnsupportedLayerError(DnnzipError, TypeError):
    """A layer has no rule for the requested operation."""


class BudgetError(DnnzipError):
    """No model met the budget. Carries the closest point found."""

    exit_code = 1

    def __init__(self, message: str, closest: dict | None = None):
        super().__init__(message)
        self.closest = closest or {}
