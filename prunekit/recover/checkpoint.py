"""The training checkpoint, without pickle: one safetensors file whose tensors are the state's
tensors and whose metadata holds the rest of the state as JSON.

It holds tensors, numbers, strings, booleans, None and lists, tuples and dicts of them: weights,
optimizer state, the step, the history, the config, the data generators' states and each
callback's ``state_dict()``. Anything else (a callback that returns an object) is refused when
saving, with the path to the offending value, instead of making a checkpoint resume cannot read.
Dict keys keep their type (optimizer state is keyed by int) and tuples stay tuples.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from prunekit.errors import ConfigError, DataError, DataNotFoundError
from prunekit.io import atomic_path

__all__ = ["FILE", "VERSION", "check_model", "check_plain", "load", "save"]

FILE = "checkpoint.safetensors"
VERSION = 3
_KEY = "prunekit.checkpoint"  # the safetensors metadata entry holding the JSON skeleton
_SCALARS = (int, float, bool, str, type(None), torch.Tensor)


def check_plain(value: Any, where: str = "checkpoint") -> None:
    """Raise a ConfigError naming ``where`` a value is that a checkpoint cannot hold."""
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
                      f"numbers, strings, None, lists and dicts. Fix: return plain data from the "
                      f"callback's state_dict().")


def _encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """``value`` as JSON data; each tensor is moved into ``tensors`` and replaced by its key."""
    if isinstance(value, torch.Tensor):
        key = f"t{len(tensors)}"
        # NOTE: safetensors refuses shared or non-contiguous storage; each tensor gets its own.
        tensors[key] = value.detach().to("cpu").contiguous().clone()
        return {"tensor": key}
    if isinstance(value, Mapping):
        return {"dict": [[k, _encode(v, tensors)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return [_encode(v, tensors) for v in value]
    return value


def _decode(value: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if isinstance(value, dict):
        if "tensor" in value:
            return tensors[value["tensor"]]
        if "tuple" in value:
            return tuple(_decode(v, tensors) for v in value["tuple"])
        return {k: _decode(v, tensors) for k, v in value["dict"]}
    return value


def save(state: Mapping[str, Any], path: Path) -> None:
    """Check ``state`` is plain data, then write it atomically as safetensors + JSON metadata."""
    from safetensors.torch import save_file

    check_plain(dict(state))
    tensors: dict[str, torch.Tensor] = {}
    skeleton = json.dumps(_encode(dict(state), tensors))
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_KEY: skeleton})


def check_model(saved: Mapping[str, torch.Tensor], model: torch.nn.Module, path: Path) -> None:
    """Refuse a checkpoint whose weights are of another architecture than ``model``, naming the
    first differing tensor (a raw ``load_state_dict`` error lists them all, over many lines)."""
    own = model.state_dict()
    where = f"train: --resume: '{path}' was saved from another architecture"
    fix = ("Resume with the --model (and --data) of the interrupted run, or train into a new --out "
           "without --resume.")
    for key, value in saved.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            raise ConfigError(f"{where}: tensor '{key}' has shape {tuple(value.shape)} there but "
                              f"{tuple(own[key].shape)} in {type(model).__name__}. {fix}")
    missing, unexpected = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
    if missing or unexpected:
        shown = "; ".join(part for part in (
            f"missing {', '.join(missing[:3])}" if missing else "",
            f"unexpected {', '.join(unexpected[:3])}" if unexpected else "") if part)
        raise ConfigError(f"{where} (its tensors do not match {type(model).__name__}'s: {shown}). {fix}")


def load(path: Path, device: torch.device) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save`; missing, old or foreign files give our errors."""
    from safetensors import safe_open

    if not path.is_file():
        old = path.with_name("checkpoint.pt")
        hint = (f" '{old}' is a checkpoint of an older prunekit, which this one does not read."
                if old.is_file() else "")
        raise DataNotFoundError(
            f"train: resume=True but '{path}' does not exist.{hint} Train once without resume to "
            f"create it, or pass the out_dir of the interrupted run.")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as file:
            skeleton = (file.metadata() or {}).get(_KEY)
            tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118
        state = _decode(json.loads(skeleton), tensors) if skeleton is not None else None
    except Exception as exc:  # NOTE: safetensors and json raise several types for a damaged file.
        raise DataError(f"train: '{path}' is not a prunekit checkpoint ({exc}). Delete it and "
                        f"train without resume.") from exc
    version = state.get("version") if isinstance(state, dict) else None
    if version != VERSION:
        raise DataError(f"train: '{path}' is a checkpoint of version {version!r}; expected {VERSION}. "
                        f"Delete it and train without resume, or resume with the prunekit version "
                        f"that wrote it.")
    return state
