"""Errors a user can act on.

Every error prunekit raises for bad input subclasses :class:`PrunekitError` and the matching
built-in (``ValueError``, ``FileNotFoundError``, ...), so callers can catch either. Messages have
four parts: the thing, what was expected, what was got, and what to do. The CLI prints them as one
line with no traceback.
"""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

__all__ = [
    "PrunekitError",
    "ConfigError",
    "UnknownNameError",
    "DataError",
    "DataNotFoundError",
    "MissingDependencyError",
    "NotFittedError",
    "OutputError",
    "did_you_mean",
    "path_error",
    "require",
]


class PrunekitError(Exception):
    """Base class of every error prunekit raises on purpose."""


class ConfigError(PrunekitError, ValueError):
    """An argument or option has a value prunekit cannot use."""


class UnknownNameError(PrunekitError, ValueError):
    """A registry lookup (model, dataset, importance, ...) found no entry of that name."""


class DataError(PrunekitError, ValueError):
    """A data file exists but its content is not what its format promises."""


class DataNotFoundError(PrunekitError, FileNotFoundError):
    """A data file or folder that prunekit needs is not there."""


class MissingDependencyError(PrunekitError, ImportError):
    """An optional package needed for this feature is not installed."""


class NotFittedError(PrunekitError, AttributeError):
    """A learned attribute (``plan_``, ``scores_``, ...) was used before ``fit``."""


class OutputError(PrunekitError, OSError):
    """An output folder cannot be used: it holds earlier results, is not writable, or is in use."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return " Did you mean 'x'?" for the closest choice, or "" when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def path_error(path: str | os.PathLike[str], expected: str, fix: str) -> PrunekitError:
    """The error for a path that is not the ``expected`` thing ("a file", "a folder", ...): "does
    not exist" only when nothing is there; otherwise what kind of thing it is."""
    where = Path(path)
    if not where.exists():
        return DataNotFoundError(f"'{where}' does not exist (expected {expected}). {fix}")
    kind = "a folder" if where.is_dir() else "a file" if where.is_file() else "not a regular file"
    return DataError(f"'{where}' is {kind}; expected {expected}. {fix}")


def require(module: str, *, pip_name: str | None = None, extra: str | None = None,
            feature: str = "this feature") -> ModuleType:
    """Import an optional dependency, or raise the four-part error with the exact install line."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = pip_name or module
        hint = f"pip install 'prunekit[{extra}]'" if extra else f"pip install {package}"
        raise MissingDependencyError(
            f"{feature} needs the optional package '{package}', which is not installed "
            f"({exc}). Install it with: {hint}"
        ) from exc
