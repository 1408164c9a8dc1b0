"""The layout record: how a result differs in shape from the architecture it was made from.

``tensors``: every state_dict entry's shape and dtype; ``attributes``: module -> the plain
attributes (widths, head counts) that differ from the original; ``identity``: blocks replaced by
``nn.Identity`` (depth pruning); ``none``: submodules set to ``None`` (e.g. a dropped pooler).
Modules under an ``opaque`` name (factorised layers) are left to their own transform. Restoring is
generic: the original is reshaped to the record with empty tensors, and the weights come after.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import torch
from torch import nn

from prunekit.errors import ConfigError, DataError

__all__ = ["layout_record", "restore_layout", "restore_modules", "restore_tensors", "LAYOUT_KEYS"]

LAYOUT_KEYS = ("tensors", "attributes", "identity", "none")
# NOTE: module attributes that are state, not architecture; never recorded (transformers' loader
# skips initialising a module marked ``_is_hf_initialized``, non-persistent buffers included).
_SKIPPED_ATTRIBUTES = frozenset({"training", "_is_hf_initialized"})
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


def _under(name: str, roots: Collection[str]) -> bool:
    return any(name == r or name.startswith(r + ".") for r in roots)


def layout_record(model: nn.Module, original: nn.Module, *, opaque: Collection[str] = ()) -> dict[str, Any]:
    """How ``model`` differs in shape from ``original``, its un-pruned architecture, as JSON data.

    ``opaque``: names of modules another transform rebuilds (factorised layers); their insides
    are not compared. A module whose type changed otherwise cannot be recorded (ConfigError).
    """
    tensors = {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
               for k, v in model.state_dict().items()}
    originals = dict(original.named_modules())
    attributes: dict[str, dict[str, Any]] = {}
    identity: list[str] = []
    for name, module in model.named_modules():
        before = originals.get(name)
        if _under(name, opaque) or _under(name, identity):
            continue
        if isinstance(module, nn.Identity) and before is not None and not isinstance(before, nn.Identity):
            identity.append(name)
            continue
        if before is None or type(module) is not type(before):
            got = "nothing" if before is None else f"a {type(before).__name__}"
            raise ConfigError(
                f"save: module '{name}' is a {type(module).__name__} but the original architecture "
                f"has {got} there. Only pruned widths, blocks replaced by nn.Identity and factorised "
                f"layers (transforms=[decompose result]) can be recorded; pass the matching source.")
        old, new = _attributes(before), _attributes(module)
        changed = {k: v for k, v in new.items() if old.get(k, _NOT_RECORDABLE) != v}
        if changed:
            attributes[name] = changed
    _check_non_persistent(model, original)
    return {"tensors": tensors, "attributes": attributes, "identity": identity,
            "none": _dropped(model, original, opaque)}


def _dropped(model: nn.Module, original: nn.Module, opaque: Collection[str]) -> list[str]:
    """Submodules of ``original`` that are ``None`` in ``model`` (outermost names only)."""
    present = {n for n, _ in model.named_modules()}
    out: list[str] = []
    for name, _ in original.named_modules():
        if not name or name in present or _under(name, out) or _under(name, opaque):
            continue
        parent, _, attr = name.rpartition(".")
        holder = model.get_submodule(parent) if parent in present else None
        if holder is None or getattr(holder, attr, _NOT_RECORDABLE) is not None:
            continue  # NOTE: under an nn.Identity, or another change layout_record reports itself.
        out.append(name)
    return out


def _check_non_persistent(model: nn.Module, original: nn.Module) -> None:
    """Non-persistent buffers are not saved, so one that changed shape cannot be restored."""
    saved = set(model.state_dict())
    before = dict(original.named_buffers())
    for name, buffer in model.named_buffers():
        if name not in saved and name in before and before[name].shape != buffer.shape:
            raise ConfigError(f"save: non-persistent buffer '{name}' changed shape from "
                              f"{tuple(before[name].shape)} to {tuple(buffer.shape)}, and such buffers "
                              f"are not saved. Register it as persistent, or do not prune through it.")


def module_at(model: nn.Module, name: str, where: str) -> nn.Module:
    """``model.get_submodule(name)``, or a DataError naming the record and the module."""
    try:
        return model.get_submodule(name)
    except AttributeError as exc:
        raise DataError(f"{where}: module '{name}' is recorded but the model has no such submodule. "
                        f"Load it into the architecture it was saved from ({exc}).") from exc


def restore_modules(model: nn.Module, layout: Mapping[str, Any], *, where: str = "layout") -> nn.Module:
    """Replace recorded blocks by ``nn.Identity`` or ``None`` and set recorded attributes, in place."""
    for name in layout["identity"]:
        module_at(model, name, where)  # NOTE: raises the four-part error for a wrong architecture.
        model.set_submodule(name, nn.Identity())
    for name in layout.get("none", ()):
        parent, _, attr = name.rpartition(".")
        module_at(model, name, where)
        setattr(module_at(model, parent, where), attr, None)
    for name, attributes in layout["attributes"].items():
        module = module_at(model, name, where)
        for attr, value in attributes.items():
            setattr(module, attr, _decode(value))
    return model


def restore_tensors(model: nn.Module, layout: Mapping[str, Any], *, where: str = "layout") -> nn.Module:
    """Replace every tensor whose recorded shape or dtype differs by an empty one (ties kept)."""
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


def restore_layout(model: nn.Module, layout: Mapping[str, Any], *, where: str = "layout") -> nn.Module:
    """Give ``model`` (the original architecture) a recorded layout, in place; returns it."""
    return restore_tensors(restore_modules(model, layout, where=where), layout, where=where)


def _replace(owners: list[tuple[nn.Module, str]], empty: torch.Tensor, old: torch.Tensor) -> None:
    new: Any = nn.Parameter(empty, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else empty
    for module, attr in owners:
        if attr in module._parameters:
            module._parameters[attr] = new
        else:
            module._buffers[attr] = new
