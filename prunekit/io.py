"""Saving and loading without pickle: weights as safetensors, records as JSON, written atomically.

A write goes to a temporary file in the same folder and is renamed into place, so a crash never
leaves a half-written file where a good one was.

A pruned model is saved as a folder: ``weights.safetensors`` plus ``plan.json``, which holds the
Plan, the *layout record* (every tensor's shape and dtype, the width attributes that differ from
the original architecture, blocks replaced by ``nn.Identity``) and the architecture to rebuild.
Loading builds the original, reshapes it to the record and loads the weights strictly.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.errors import ConfigError, DataError, DataNotFoundError

__all__ = ["atomic_path", "save_weights", "load_weights", "save_json", "load_json",
           "save_pruned", "load_pruned", "layout_record", "restore_layout"]


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


# --- pruned models: weights + plan + layout record, rebuilt from the original architecture ---

PRUNED_FORMAT = "prunekit.pruned"
PRUNED_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
RECORD_FILE = "plan.json"
# NOTE: module attributes that are state, not architecture; never recorded.
_SKIPPED_ATTRIBUTES = frozenset({"training"})
_Scalar = (bool, int, float, str, type(None))
_NOT_RECORDABLE = object()


def _encode(value: Any) -> Any:
    """A JSON-able form of a width attribute, or ``_NOT_RECORDABLE`` (tuples are tagged)."""
    if isinstance(value, _Scalar):
        return value
    if isinstance(value, (tuple, list)):
        items = [_encode(v) for v in value]
        if any(i is _NOT_RECORDABLE for i in items):
            return _NOT_RECORDABLE
        return {"tuple": items} if isinstance(value, tuple) else items
    return _NOT_RECORDABLE


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(_decode(v) for v in value["tuple"])
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _attributes(module: nn.Module) -> dict[str, Any]:
    """A module's plain attributes (widths, kernel sizes, flags) in encoded form."""
    out = {}
    for name, value in vars(module).items():
        if name not in _SKIPPED_ATTRIBUTES:
            encoded = _encode(value)
            if encoded is not _NOT_RECORDABLE:
                out[name] = encoded
    return out


def layout_record(model: nn.Module, original: nn.Module) -> dict[str, Any]:
    """How ``model`` differs in shape from ``original``, its un-pruned architecture, as JSON data.

    ``tensors``: every state_dict entry's shape and dtype; ``attributes``: module -> the plain
    attributes that differ from ``original``; ``identity``: modules replaced by ``nn.Identity``
    (depth pruning).
    """
    tensors = {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
               for k, v in model.state_dict().items()}
    originals = dict(original.named_modules())
    attributes: dict[str, dict[str, Any]] = {}
    identity: list[str] = []
    for name, module in model.named_modules():
        before = originals.get(name)
        if isinstance(module, nn.Identity) and before is not None and not isinstance(before, nn.Identity):
            identity.append(name)
            continue
        if before is None or type(module) is not type(before):
            got = "nothing" if before is None else f"a {type(before).__name__}"
            raise ConfigError(
                f"save_pruned: module '{name}' is a {type(module).__name__} but the original "
                f"architecture has {got} there. Only channel pruning and replacing "
                f"blocks by nn.Identity can be recorded; pass the matching `architecture`.")
        old, new = _attributes(before), _attributes(module)
        changed = {k: v for k, v in new.items() if old.get(k, _NOT_RECORDABLE) != v}
        if changed:
            attributes[name] = changed
    _check_non_persistent(model, original)
    return {"tensors": tensors, "attributes": attributes, "identity": identity}


def _check_non_persistent(model: nn.Module, original: nn.Module) -> None:
    """Non-persistent buffers are not saved, so one that changed shape cannot be restored."""
    saved = set(model.state_dict())
    before = dict(original.named_buffers())
    for name, buffer in model.named_buffers():
        if name not in saved and name in before and before[name].shape != buffer.shape:
            raise ConfigError(f"save_pruned: non-persistent buffer '{name}' changed shape from "
                              f"{tuple(before[name].shape)} to {tuple(buffer.shape)}, and such buffers "
                              f"are not saved. Register it as persistent, or do not prune through it.")


def _build(architecture: Mapping[str, Any], where: str) -> nn.Module:
    from prunekit.models import create

    spec = dict(architecture)
    name = spec.pop("model", None)
    if not isinstance(name, str):
        raise ConfigError(f"{where}: the architecture {dict(architecture)} has no 'model' name. Pass "
                          f"e.g. {{'model': 'resnet20', 'num_classes': 10}}, or pass the un-pruned model.")
    return create(name, **spec)


def save_pruned(model: nn.Module, plan: Any, path_dir: str | os.PathLike[str], *,
                architecture: Mapping[str, Any], original: nn.Module | None = None) -> Path:
    """Save a pruned model as ``path_dir/weights.safetensors`` + ``path_dir/plan.json``; no pickle.

    Args:
        plan: the :class:`~prunekit.structured.Plan` applied (or ``None``, e.g. after depth pruning).
        architecture: how to rebuild the original, ``prunekit.models.create(**architecture)`` style:
            ``{"model": "resnet20", "num_classes": 10, "in_channels": 1}``. Stored as given.
        original: an un-pruned instance of the architecture, for models not in the zoo; by default
            it is built from ``architecture``.

    The folder is written beside its final place and renamed in, so a failed save never leaves
    partial content where a good save was. ``path_dir`` must be new, empty, or an earlier save.
    """
    target = Path(path_dir)
    _check_replaceable(target)
    base = original if original is not None else _build(architecture, "save_pruned")
    record = {"format": PRUNED_FORMAT, "version": PRUNED_VERSION, "architecture": dict(architecture),
              "plan": None if plan is None else plan.to_dict(), "layout": layout_record(model, base)}
    json.dumps(record)  # NOTE: fail before writing anything if the architecture is not JSON data.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        save_weights(model, tmp / WEIGHTS_FILE, metadata={"format": PRUNED_FORMAT})
        save_json(record, tmp / RECORD_FILE)
        _swap_in(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


def _check_replaceable(target: Path) -> None:
    if target.exists() and (not target.is_dir() or (any(target.iterdir())
                                                     and not (target / RECORD_FILE).is_file())):
        raise ConfigError(f"save_pruned: '{target}' exists and is not an earlier save_pruned folder "
                          f"(no {RECORD_FILE}). Pick a new or empty folder; nothing was written.")


def _swap_in(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target``; an existing ``target`` is moved aside first, then deleted."""
    if not target.exists():
        os.replace(tmp, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    os.replace(target, old / "content")
    os.replace(tmp, target)
    shutil.rmtree(old)


def load_pruned(path_dir: str | os.PathLike[str], model: nn.Module | None = None) -> nn.Module:
    """Rebuild a model saved by :func:`save_pruned`; never unpickles anything.

    Builds the original architecture from the record (or copies ``model``, an un-pruned instance
    of it; ``model`` itself is not changed), gives it the recorded layout, then loads the weights
    strictly. Exported as ``prunekit.load``.
    """
    folder = Path(path_dir)
    record_file, weights_file = folder / RECORD_FILE, folder / WEIGHTS_FILE
    record = load_json(record_file)
    _check_record(record, record_file)
    built = copy.deepcopy(model) if model is not None else _build(record["architecture"], f"'{record_file}'")
    restore_layout(built, record["layout"], where=str(record_file))
    return load_weights(built, weights_file, strict=True)


def _check_record(record: Any, file: Path) -> None:
    if not isinstance(record, dict) or record.get("format") != PRUNED_FORMAT:
        raise DataError(f"'{file}' is not a prunekit pruned-model record (expected \"format\": "
                        f"\"{PRUNED_FORMAT}\"). Save the model with prunekit.io.save_pruned.")
    if record.get("version") != PRUNED_VERSION:
        raise DataError(f"'{file}' has record version {record.get('version')!r}; this prunekit reads "
                        f"version {PRUNED_VERSION}. Re-save it with this prunekit version.")
    layout = record.get("layout")
    if not isinstance(layout, dict) or not {"tensors", "attributes", "identity"} <= set(layout):
        raise DataError(f"'{file}' has no complete 'layout' (tensors, attributes, identity). The file "
                        f"is damaged; re-save the model with prunekit.io.save_pruned.")


def restore_layout(model: nn.Module, layout: Mapping[str, Any], *, where: str = "layout") -> nn.Module:
    """Give ``model`` (the original architecture) a recorded layout, in place; returns it.

    Generic: modules listed in ``identity`` become ``nn.Identity``, recorded attributes are set,
    and every tensor whose recorded shape or dtype differs is replaced by an empty one (tied
    tensors stay tied). The values come afterwards, from the weights file.
    """
    for name in layout["identity"]:
        _module(model, name, where)  # NOTE: raises the four-part error for a wrong architecture.
        model.set_submodule(name, nn.Identity())
    for name, attributes in layout["attributes"].items():
        module = _module(model, name, where)
        for attr, value in attributes.items():
            setattr(module, attr, _decode(value))
    owners: dict[int, list[tuple[nn.Module, str]]] = {}
    for module in model.modules():
        for attr, t in list(module._parameters.items()) + list(module._buffers.items()):
            if t is not None:
                owners.setdefault(id(t), []).append((module, attr))
    state = model.state_dict(keep_vars=True)
    for key, spec in layout["tensors"].items():
        if key not in state:
            raise DataError(f"{where}: tensor '{key}' is recorded but the model has no such parameter "
                            f"or buffer. Load it into the architecture it was saved from.")
        old = state[key]
        shape, dtype = tuple(spec["shape"]), getattr(torch, spec["dtype"], None)
        if not isinstance(dtype, torch.dtype):
            raise DataError(f"{where}: tensor '{key}' has unknown dtype {spec['dtype']!r}. The file is "
                            f"damaged; re-save the model.")
        if tuple(old.shape) != shape or old.dtype != dtype:
            _replace(owners.get(id(old), []), torch.empty(shape, dtype=dtype, device=old.device), old)
    return model


def _module(model: nn.Module, name: str, where: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError as exc:
        raise DataError(f"{where}: module '{name}' is recorded but the model has no such submodule. "
                        f"Load it into the architecture it was saved from ({exc}).") from exc


def _replace(owners: list[tuple[nn.Module, str]], new: torch.Tensor, old: torch.Tensor) -> None:
    if isinstance(old, nn.Parameter):
        new = nn.Parameter(new, requires_grad=old.requires_grad)
    for module, attr in owners:
        if attr in module._parameters:
            module._parameters[attr] = new
        else:
            module._buffers[attr] = new
