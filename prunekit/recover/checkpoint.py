"""The training checkpoint: plain data only, so ``torch.load(weights_only=True)`` reads it back.

It holds tensors, numbers, strings, booleans, None and lists, tuples and dicts of them: weights,
optimizer state, the step, the history, the config, the data generators' states and each
callback's ``state_dict()``. Anything else (a callback that returns an object) is refused when
saving, with the path to the offending value, instead of making a checkpoint resume cannot read.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from prunekit.errors import ConfigError, DataError, DataNotFoundError
from prunekit.io import atomic_path

__all__ = ["VERSION", "check_plain", "load", "save"]

VERSION = 2
_SCALARS = (int, float, bool, str, type(None), torch.Tensor)


def check_plain(value: Any, where: str = "checkpoint") -> None:
    """Raise a ConfigError naming ``where`` a value is that ``weights_only`` loading would refuse."""
    if isinstance(value, _SCALARS):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise ConfigError(f"{where}: key {key!r} is a {type(key).__name__}; expected str or "
                                  f"int keys only. Fix: return plain data from state_dict().")
            check_plain(item, f"{where}[{key!r}]")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_plain(item, f"{where}[{index}]")
        return
    raise ConfigError(f"{where} is a {type(value).__name__}; a checkpoint holds only tensors, "
                      f"numbers, strings, None, lists and dicts (loaded with weights_only=True). "
                      f"Fix: return plain data from the callback's state_dict().")


def save(state: Mapping[str, Any], path: Path) -> None:
    """Check ``state`` is plain data, then write it atomically."""
    check_plain(dict(state))
    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)


def load(path: Path, device: torch.device) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; missing or foreign files give our errors."""
    if not path.is_file():
        raise DataNotFoundError(
            f"train: resume=True but '{path}' does not exist. Train once without resume to create "
            f"it, or pass the out_dir of the interrupted run."
        )
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # NOTE: torch raises several types for a damaged or foreign file.
        raise DataError(f"train: '{path}' is not a prunekit checkpoint ({exc}). Delete it and "
                        f"train without resume.") from exc
    version = state.get("version") if isinstance(state, dict) else None
    if version not in (1, VERSION):
        raise DataError(f"train: '{path}' is a checkpoint of version {version!r}; expected 1 or "
                        f"{VERSION}. Delete it and train without resume, or resume with the "
                        f"prunekit version that wrote it.")
    return state
