"""Saving and loading without pickle: weights as safetensors, records as JSON, written atomically.

A write goes to a temporary file in the same folder and is renamed into place, so a crash never
leaves a half-written file where a good one was.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.errors import DataError, DataNotFoundError

__all__ = ["atomic_path", "save_weights", "load_weights", "save_json", "load_json"]


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_weights(model: nn.Module | dict[str, torch.Tensor], path: str | os.PathLike[str],
                 metadata: dict[str, str] | None = None) -> Path:
    """Write a model's ``state_dict`` (or a tensor dict) as safetensors; returns the path."""
    from safetensors.torch import save_file

    state = model.state_dict() if isinstance(model, nn.Module) else model
    # NOTE: safetensors refuses shared or non-contiguous storage; clone each tensor on its own.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata or {})
    return Path(path)


def load_weights(model: nn.Module, path: str | os.PathLike[str], *, strict: bool = True) -> nn.Module:
    """Load safetensors weights into ``model`` in place; shape mismatches name the tensor."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = Path(path)
    if not file.is_file():
        raise DataNotFoundError(f"Weights file '{file}' does not exist. Check the path, or train "
                                f"first with `prunekit train --out DIR` (writes DIR/model.safetensors).")
    try:
        state = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"'{file}' is not a readable safetensors file ({exc}). Re-create it with "
                        f"prunekit.io.save_weights or `prunekit train`.") from exc
    own = model.state_dict()
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise DataError(
                f"'{file}': tensor '{key}' has shape {tuple(value.shape)} but the model expects "
                f"{tuple(own[key].shape)}. The file was saved from a different architecture "
                f"(another --model, class count or input channels)."
            )
    missing, unexpected = model.load_state_dict(state, strict=False)
    if strict and (missing or unexpected):
        raise DataError(
            f"'{file}' does not match the model: missing {list(missing)[:5]}, unexpected "
            f"{list(unexpected)[:5]}. Load it into the architecture it was saved from."
        )
    return model


def save_json(data: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    return Path(path)


def load_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file written by :func:`save_json`."""
    file = Path(path)
    if not file.is_file():
        raise DataNotFoundError(f"JSON file '{file}' does not exist. Check the path.")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"'{file}' is not valid JSON ({exc}). Re-create it.") from exc
