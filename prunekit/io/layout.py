"""The layout record: how a result differs in shape from the architecture it was made from.

``tensors``: every state_dict entry's shape and dtype; ``attributes``: module -> the plain
attributes (widths, head counts) that differ from the original; ``identity``: blocks replaced by
``nn.Identity`` (depth pruning); ``none``: submodules set to ``None`` (e.g. a dropped pooler).
Written only when a result has them: ``replaced``: module -> the prunekit class that holds it once
pruned (``PrunedMultiheadAttention``), rebuilt with the class's ``from_module``; ``buffers``: the
sliced non-persistent buffers (not in the state_dict, so their values are saved beside the weights).
Modules under an ``opaque`` name (factorised layers) are left to their own transform. Restoring is
generic: the original is reshaped to the record with empty tensors, and the weights come after.
"""

from __future__ import annotations

import importlib
from collections.abc import Collection, Mapping
from typing import Any

import torch
from torch import nn

from prunekit._settings import dotted_holder, settings_object
from prunekit.errors import ConfigError, DataError

__all__ = ["layout_record", "restore_layout", "restore_modules", "restore_tensors", "restore_buffers",
           "sliced_buffers", "LAYOUT_KEYS"]

LAYOUT_KEYS = ("tensors", "attributes", "identity", "none")
# NOTE: the modules prunekit puts in a pruned module's place live in prunekit itself; a record naming
# a class anywhere else is refused, so loading a manifest never imports code the file chooses.
_OWN_PACKAGE = "prunekit."
# NOTE: module attributes that are state, not architecture; never recorded (transformers' loader
# skips initialising a module marked ``_is_hf_initialized``, non-persistent buffers included; a
# model marked ``_output_capturing_hooks_installed``, set by its first forward that records hidden
# states, never installs the hooks that collect them).
_SKIPPED_ATTRIBUTES = frozenset({"training", "_is_hf_initialized", "_output_capturing_hooks_installed"})
_Scalar = (bool, int, float, str, type(None))
_NOT_RECORDABLE = object()


def _encode(value: Any) -> Any:
    """A JSON-able form of a width attribute, or ``_NOT_RECORDABLE`` (tuples are tagged; a prunekit
    object with ``layout_fields`` and ``from_layout``, a layer's own view of a config, by its fields)."""
    if isinstance(value, _Scalar):
        return value
    if _is_layout_object(type(value)):
        return {"object": _class_path(type(value)), "fields": value.layout_fields()}
    if isinstance(value, (tuple, list)):
        items = [_encode(v) for v in value]
        if any(i is _NOT_RECORDABLE for i in items):
            return _NOT_RECORDABLE
        return {"tuple": items} if isinstance(value, tuple) else items
    return _NOT_RECORDABLE


def _decode(value: Any, current: Any = None, where: str = "layout: an attribute") -> Any:
    """The attribute a recorded value stands for; ``current``: the attribute as built (the config a
    layer's own view reads everything else from)."""
    if isinstance(value, dict) and "object" in value:
        return _layout_class(value["object"], where).from_layout(current, dict(value["fields"]))
    if isinstance(value, dict):
        return tuple(_decode(v) for v in value["tuple"])
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _attributes(module: nn.Module) -> dict[str, Any]:
    """A module's plain attributes (widths, kernel sizes, flags) in encoded form; the fields of a
    settings object it holds as ``name.field`` (``args.d_inner``)."""
    entries: list[tuple[str, Any]] = []
    for name, value in vars(module).items():
        if name in _SKIPPED_ATTRIBUTES:
            continue
        if settings_object(value) and not name.startswith("_") and vars(value):
            entries += [(f"{name}.{f}", v) for f, v in vars(value).items() if not f.startswith("_")]
        else:
            entries.append((name, value))
    encoded = {key: _encode(value) for key, value in entries}
    return {key: value for key, value in encoded.items() if value is not _NOT_RECORDABLE}


def _under(name: str, roots: Collection[str]) -> bool:
    return any(name == r or name.startswith(r + ".") for r in roots)


def _kind(module: nn.Module) -> type:
    """The module's class; for a parametrized module (``weight_norm``), the class torch made its
    per-instance ``Parametrized...`` class from, so that two instances of one architecture agree."""
    from torch.nn.utils import parametrize

    return parametrize.type_before_parametrizations(module)


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
    replaced: dict[str, str] = {}
    for name, module in model.named_modules():
        before = originals.get(name)
        if _under(name, opaque) or _under(name, identity):
            continue
        if isinstance(module, nn.Identity) and before is not None and not isinstance(before, nn.Identity):
            identity.append(name)
            continue
        if before is not None and _kind(module) is not _kind(before) and _is_replacement(type(module)):
            replaced[name] = _class_path(type(module))
        elif before is None or _kind(module) is not _kind(before):
            got = "nothing" if before is None else f"a {type(before).__name__}"
            raise ConfigError(
                f"save: module '{name}' is a {type(module).__name__} but the original architecture "
                f"has {got} there. Only pruned widths, blocks replaced by nn.Identity and factorised "
                f"layers (transforms=[decompose result]) can be recorded; pass the matching source.")
        old, new = _attributes(before), _attributes(module)
        changed = {k: v for k, v in new.items() if old.get(k, _NOT_RECORDABLE) != v}
        if changed:
            attributes[name] = changed
    record: dict[str, Any] = {"tensors": tensors, "attributes": attributes, "identity": identity,
                              "none": _dropped(model, original, opaque)}
    buffers = _sliced(model, original, changed=attributes)
    # NOTE: only results that have them carry the two keys, so every other manifest stays as it was.
    if replaced:
        record["replaced"] = replaced
    if buffers:
        record["buffers"] = buffers
    return record


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


def _is_replacement(klass: type) -> bool:
    """A prunekit class that takes a pruned module's place and rebuilds from the original's."""
    return klass.__module__.startswith(_OWN_PACKAGE) and callable(getattr(klass, "from_module", None))


def _is_layout_object(klass: type) -> bool:
    """A prunekit class whose instances a module attribute may hold, recorded by their fields."""
    return (klass.__module__.startswith(_OWN_PACKAGE) and callable(getattr(klass, "layout_fields", None))
            and callable(getattr(klass, "from_layout", None)))


def _own_class(path: Any) -> Any:
    """What a record's class path names, imported only from prunekit itself (else None)."""
    module_name, _, class_name = str(path).rpartition(".")
    if not module_name.startswith(_OWN_PACKAGE):
        return None
    try:
        return getattr(importlib.import_module(module_name), class_name, None)
    except ImportError:
        return None


def _layout_class(path: Any, where: str) -> Any:
    """The class an ``object`` attribute record names: only a prunekit class with ``from_layout``."""
    klass = _own_class(path)
    if not isinstance(klass, type) or not _is_layout_object(klass):
        raise DataError(f"{where} is recorded as a {path!r}, which is not a prunekit class with from_layout. "
                        f"Load it with the prunekit that saved it, or save the model again.")
    return klass


def _class_path(klass: type) -> str:
    return f"{klass.__module__}.{klass.__qualname__}"


def _replacement(path: Any, name: str, where: str) -> Any:
    """The class a ``replaced`` record names: only a prunekit class with ``from_module``."""
    klass = _own_class(path)
    if not isinstance(klass, type) or not issubclass(klass, nn.Module) or not _is_replacement(klass):
        raise DataError(f"{where}: module '{name}' is recorded as replaced by {path!r}, which is not a "
                        f"prunekit module class with from_module. Load it with the prunekit that saved "
                        f"it, or save the model again.")
    return klass


def _sliced(model: nn.Module, original: nn.Module, changed: Collection[str] = ()) -> dict[str, dict[str, Any]]:
    """The non-persistent buffers of every module where one changed shape from the original's, or
    whose attributes differ from the original's (``changed``: module names).

    They are not in the state_dict, so the architecture rebuilt from the record would bring them
    back at their old shape, or derive them again from its attributes (a sinusoidal table of the
    kept columns is not the table a narrower module makes); a loader that re-initialises them
    (transformers) is told the whole module is done, so all of that module's non-persistent buffers
    are kept.
    """
    before = dict(original.named_buffers())
    out: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        own = {f"{name}.{attr}" if name else attr: module._buffers[attr]
               for attr in sorted(module._non_persistent_buffers_set) if module._buffers.get(attr) is not None}
        if name in changed or any(key in before and before[key].shape != t.shape for key, t in own.items()):
            out.update({key: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
                        for key, t in own.items() if key not in out})
    return out


def sliced_buffers(model: nn.Module, layout: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The values of the buffers ``layout`` records as sliced (saved beside the weights)."""
    buffers = dict(model.named_buffers())
    return {name: buffers[name].detach().to("cpu").contiguous().clone() for name in layout.get("buffers", {})}


def module_at(model: nn.Module, name: str, where: str) -> nn.Module:
    """``model.get_submodule(name)``, or a DataError naming the record and the module."""
    try:
        return model.get_submodule(name)
    except AttributeError as exc:
        raise DataError(f"{where}: module '{name}' is recorded but the model has no such submodule. "
                        f"Load it into the architecture it was saved from ({exc}).") from exc


def restore_modules(model: nn.Module, layout: Mapping[str, Any], *, where: str = "layout") -> nn.Module:
    """Replace recorded blocks by ``nn.Identity``, ``None`` or their pruned class, and set recorded
    attributes, in place."""
    for name in layout["identity"]:
        module_at(model, name, where)  # NOTE: raises the four-part error for a wrong architecture.
        model.set_submodule(name, nn.Identity())
    for name in layout.get("none", ()):
        parent, _, attr = name.rpartition(".")
        module_at(model, name, where)
        setattr(module_at(model, parent, where), attr, None)
    for name, path in layout.get("replaced", {}).items():
        klass = _replacement(path, name, where)
        model.set_submodule(name, klass.from_module(module_at(model, name, where)))
    for name, attributes in layout["attributes"].items():
        module = module_at(model, name, where)
        for attr, value in attributes.items():
            here = f"{where}: attribute '{attr}' of module '{name}'"
            holder, last = dotted_holder(module, attr)  # NOTE: a settings object's field (``args.d_inner``)
            setattr(holder, last, _decode(value, getattr(holder, last, None), here))
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


def restore_buffers(model: nn.Module, layout: Mapping[str, Any], values: Mapping[str, torch.Tensor], *,
                    where: str = "layout") -> nn.Module:
    """Put the saved values of the recorded sliced buffers in place (every module sharing one), in place."""
    recorded = layout.get("buffers", {})
    if not recorded:
        return model
    owners: dict[int, list[tuple[nn.Module, str]]] = {}
    for module in model.modules():
        for attr, t in module._buffers.items():
            if t is not None:
                owners.setdefault(id(t), []).append((module, attr))
    current = dict(model.named_buffers())
    for name, spec in recorded.items():
        value = values.get(name)
        if name not in current:
            raise DataError(f"{where}: buffer '{name}' is recorded but the model has no such buffer. Load it "
                            f"into the architecture it was saved from.")
        if value is None or list(value.shape) != list(spec["shape"]) or str(value.dtype) != f"torch.{spec['dtype']}":
            got = "nothing" if value is None else f"{tuple(value.shape)} {value.dtype}"
            raise DataError(f"{where}: buffer '{name}' is recorded as {tuple(spec['shape'])} {spec['dtype']} but "
                            f"the saved buffers hold {got}. The folder is damaged; save the model again.")
        old = current[name]
        value = value.to(old.device) if old.device.type != "meta" else value
        for module, attr in owners.get(id(old), []):
            module._buffers[attr] = value
            # NOTE: transformers' loader re-creates non-persistent buffers and re-initialises them from
            # the module's own widths unless the module is marked done; the caller restores them again
            # after the weights (every non-persistent buffer of such a module is recorded).
            module._is_hf_initialized = True  # type: ignore[assignment]
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
