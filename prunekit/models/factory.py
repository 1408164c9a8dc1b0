"""Your own model: ``path/to/file.py:factory`` or ``package.module:factory`` -> ``factory(**kwargs)``.

This RUNS YOUR CODE: the file (or module) is executed as Python, as ``import`` would, and the
factory is called with the options given. Name only files you trust. A file is run under its own
module name (``prunekit_user_<stem>_<hash>``, kept in ``sys.modules`` so its classes work with
``copy``, ``typing`` and ``torch.export``), with its folder on ``sys.path`` only while it is run and
its factory called (so it can import its sibling files).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from prunekit.errors import (
    ConfigError,
    DataError,
    DataNotFoundError,
    PrunekitError,
    UnknownNameError,
    did_you_mean,
)

__all__ = ["from_file", "from_module"]


def from_file(path_text: str, name: str, *, spec: str, options: Mapping[str, Any]) -> nn.Module:
    """Run the Python file ``path_text`` and return ``name(**options)``, which must be an nn.Module."""
    path = Path(path_text).expanduser().absolute()
    if not path.is_file():
        raise DataNotFoundError(f"Model spec '{spec}': no such file '{path}'; expected a Python file "
                                f"defining {name}() that returns an nn.Module. Check the path.")
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"Model spec '{spec}': cannot read '{path}' ({exc}); expected a UTF-8 Python "
                        f"file defining {name}().") from exc
    if not source.strip():
        raise DataError(f"Model spec '{spec}': '{path}' is empty; expected Python code defining {name}() "
                        f"that returns an nn.Module.")
    with _on_path(path.parent):
        module = _run_file(path, spec)
        return _call(module, name, spec=spec, where=f"'{path}'", options=options)


def from_module(module_name: str, name: str, *, spec: str, options: Mapping[str, Any]) -> nn.Module:
    """Import ``module_name`` and return ``name(**options)``, which must be an nn.Module."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (module_name == exc.name or module_name.startswith(f"{exc.name}.")):
            raise ConfigError(f"Model spec '{spec}': importing '{module_name}' failed: {exc}. Install what "
                              f"it needs.") from exc
        raise DataNotFoundError(f"Model spec '{spec}': no module '{module_name}' can be imported; expected "
                                f"an installed module or one on PYTHONPATH defining {name}(). For a file "
                                f"write 'path/to/file.py:{name}'.") from None
    except Exception as exc:  # NOTE: user code can raise anything while it is imported.
        raise ConfigError(f"Model spec '{spec}': importing '{module_name}' raised {type(exc).__name__}: "
                          f"{exc}. Fix the module (prunekit runs it to build your model).") from exc
    return _call(module, name, spec=spec, where=f"module '{module_name}'", options=options)


def _run_file(path: Path, spec: str) -> ModuleType:
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    module_name = f"prunekit_user_{_identifier(path.stem)}_{digest}"
    stat = path.stat()
    stamp = (stat.st_mtime_ns, stat.st_size)
    existing = sys.modules.get(module_name)
    if existing is not None and getattr(existing, "__prunekit_stamp__", None) == stamp:
        # NOTE: the same unchanged file gives the same classes, so a model built twice from one spec
        # (the dense source and a rebuilt copy) has modules of one type, as save and load compare.
        return existing
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ConfigError(f"Model spec '{spec}': '{path}' cannot be loaded as Python; expected a .py file.")
    module = importlib.util.module_from_spec(loader_spec)
    module.__prunekit_stamp__ = stamp  # type: ignore[attr-defined]
    sys.modules[module_name] = module  # NOTE: dataclasses and typing look classes up there.
    try:
        loader_spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[module_name]
        if not isinstance(exc, Exception):
            raise
        raise ConfigError(f"Model spec '{spec}': running '{path}' raised {type(exc).__name__}: {exc}. Fix "
                          f"the file (prunekit runs it to build your model).") from exc
    return module


def _call(module: ModuleType, name: str, *, spec: str, where: str, options: Mapping[str, Any]) -> nn.Module:
    """``module.name(**options)``, checked: it exists, takes the options, and returns an nn.Module."""
    factory = getattr(module, name, None)
    if factory is None or not callable(factory):
        found = _callables(module)
        listed = ", ".join(found[:15]) or "none"
        raise UnknownNameError(f"Model spec '{spec}': {where} has no factory '{name}'.{did_you_mean(name, found)} "
                               f"Its callables: {listed}. Expected a function that returns an nn.Module.")
    options = _taken_sizes(factory, options)
    _check_options(factory, name, spec, options)
    try:
        model = factory(**options)
    except PrunekitError:
        raise
    except Exception as exc:  # NOTE: user code can raise anything.
        raise ConfigError(f"Model spec '{spec}': {name}({_shown(options)}) raised {type(exc).__name__}: "
                          f"{exc}. Fix the factory or its options.") from exc
    if not isinstance(model, nn.Module):
        raise ConfigError(f"Model spec '{spec}': {name}() returned a {type(model).__name__}, not an "
                          f"nn.Module. Make it return the model (e.g. `return MyNet()`).")
    return model


_SIZES = ("num_classes", "in_channels")  # sizes prunekit reads from the data, offered to every factory


def _taken_sizes(factory: Callable[..., Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` without the data's sizes (``num_classes``, ``in_channels``) that ``factory`` has no
    parameter for: a user's ``build(num_classes=3)`` is not given ``in_channels`` (whether the model
    fits the data is checked after it is built). Other options stay, checked as given."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return dict(options)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return dict(options)
    return {k: v for k, v in options.items() if k not in _SIZES or k in parameters}


def _check_options(factory: Callable[..., Any], name: str, spec: str, options: Mapping[str, Any]) -> None:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # NOTE: some builtins have no signature; let the call decide.
        return
    try:
        signature.bind(**options)
    except TypeError as exc:
        raise ConfigError(f"Model spec '{spec}': {name}{signature} cannot take the options "
                          f"{sorted(options)} ({exc}). Pass only options the factory accepts.") from None


def _callables(module: ModuleType) -> list[str]:
    """Public callables defined in ``module`` (all public callables if it defines none)."""
    public = {n: v for n, v in vars(module).items() if not n.startswith("_") and callable(v)}
    own = [n for n, v in public.items() if getattr(v, "__module__", None) == module.__name__]
    return sorted(own or public)


def _shown(options: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in options.items())


def _identifier(stem: str) -> str:
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in stem)
    return cleaned if cleaned[:1].isalpha() else f"m_{cleaned}"


@contextlib.contextmanager
def _on_path(folder: Path) -> Iterator[None]:
    """Put ``folder`` first on ``sys.path`` for the block only, so the file can import its siblings."""
    entry = str(folder)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)
