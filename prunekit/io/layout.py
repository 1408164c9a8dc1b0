"""The layout record: how a result differs in shape from the architecture it was made from.

``tensors``: every state_dict entry's shape and dtype; ``attributes``: module -> the plain
attributes (widths, head counts) that differ from the original; ``identity``: blocks replaced by
``nn.Identity`` (depth pruning); ``none``: submodules set to ``None`` (e.g. a dropped pooler).
Written only when a result has them: ``replaced``: module -> the prunekit class that holds it once
pruned (``PrunedMultiheadAttention``, one of ``RECORDABLE_CLASSES``), rebuilt with the class's
``from_module``; ``buffers``: the non-persistent buffers the rebuilt architecture would not bring back
as they are (sliced, cast, or set after construction; not in the state_dict, so their values are
saved beside the weights); ``tied``: the groups of state_dict keys that share one tensor (written
when the model or its original ties any, so a tie the original makes and the model broke reads
``[]``); ``factorised_attributes`` (written by :func:`prunekit.io.save`): the attributes inside
factorised layers that differ from their rebuilt shells. Modules under an ``opaque`` name
(factorised layers) are left to their own transform. Restoring is generic: the original is reshaped
to the record with empty tensors, tied and untied as recorded, and the weights come after.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit._settings import dotted_holder, settings_object
from prunekit.errors import ConfigError, DataError

__all__ = ["layout_record", "restore_layout", "restore_modules", "restore_attributes", "restore_tensors",
           "restore_buffers", "restore_ties", "ties_as_recorded", "tie_groups", "state_once", "changed_attributes",
           "sliced_buffers", "type_of", "same_class", "LAYOUT_KEYS", "RECORDABLE_CLASSES"]

LAYOUT_KEYS = ("tensors", "attributes", "identity", "none")
# NOTE: every class a saved folder may name: the modules pruning puts in a module's place (rebuilt
# with ``from_module``) and the per-layer config views a module may hold (``from_layout``). A record
# naming any other class is refused and only these classes' modules are ever imported, so a manifest
# never chooses the code that loading runs. A new such class must be added here to be saved.
RECORDABLE_CLASSES = frozenset({
    "prunekit.graph.handlers.attention_modules.PrunedMultiheadAttention",
    "prunekit.graph.handlers.bias_heads.SelectedBiasHeads",
    "prunekit.graph.handlers.cascaded_attention.PrunedCascadedGroupAttention",
    "prunekit.graph.handlers.pruned_swin.PrunedShiftedWindowAttention",
    "prunekit.graph.handlers.hf_modules.LayerConfig",
})
_OWN_PACKAGE = "prunekit."
# NOTE: module attributes that are state, not architecture; never recorded (transformers' loader
# skips initialising a module marked ``_is_hf_initialized``, non-persistent buffers included; a
# model marked ``_output_capturing_hooks_installed``, set by its first forward that records hidden
# states, never installs the hooks that collect them).
_SKIPPED_ATTRIBUTES = frozenset({"training", "_is_hf_initialized", "_output_capturing_hooks_installed"})
_Scalar = (bool, int, float, str, type(None))
_Plain = (*_Scalar, tuple, list)
_NOT_RECORDABLE = object()


def _encode(value: Any) -> Any:
    """A JSON-able form of a width attribute, or ``_NOT_RECORDABLE`` (tuples are tagged; a prunekit
    object with ``layout_fields`` and ``from_layout``, a layer's own view of a config, by its fields)."""
    if isinstance(value, _Scalar):
        return value
    if _is_layout_object(type(value)):
        return {"object": _class_path(type(value)), "fields": value.layout_fields()}
    if _unlisted(type(value)):
        raise ConfigError(f"save: an attribute holds a {_class_path(type(value))}, which saved folders may not "
                          f"name yet. Add it to prunekit.io.layout.RECORDABLE_CLASSES.")
    if isinstance(value, (tuple, list)):
        items = [_encode(v) for v in value]
        if any(i is _NOT_RECORDABLE for i in items):
            return _NOT_RECORDABLE
        return {"tuple": items} if isinstance(value, tuple) else items
    return _NOT_RECORDABLE


def _decode(value: Any, current: Any = None, where: str = "layout: an attribute") -> Any:
    """The attribute a recorded value stands for; ``current``: the attribute as built (the config a
    layer's own view reads everything else from)."""
    if isinstance(value, dict) and set(value) == {"object", "fields"} and isinstance(value["fields"], dict):
        return _layout_class(value["object"], where).from_layout(current, dict(value["fields"]))
    if isinstance(value, dict) and set(value) == {"tuple"} and isinstance(value["tuple"], list):
        return tuple(_decode(v, where=where) for v in value["tuple"])
    if isinstance(value, list):
        return [_decode(v, where=where) for v in value]
    if isinstance(value, dict) or not isinstance(value, _Scalar):
        raise DataError(f"{where} is recorded as {value!r}, which is not an encoded attribute. The file is "
                        f"damaged; save the model again.")
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


def type_of(module: nn.Module) -> type:
    """The module's class; for a parametrized module (``weight_norm``), the class torch made its
    per-instance ``Parametrized...`` class from, so that two instances of one architecture agree."""
    from torch.nn.utils import parametrize

    return parametrize.type_before_parametrizations(module)


def same_class(a: type, b: type) -> bool:
    """Whether ``a`` and ``b`` are one class: the same object, or the same qualified name defined in the
    same source file (a user's ``my_model.py`` imported as ``my_model`` and also run under prunekit's own
    module name for the spec ``my_model.py:build`` defines its classes twice)."""
    if a is b:
        return True
    file = _source_file(a)
    return a.__qualname__ == b.__qualname__ and file is not None and file == _source_file(b)


def _unrecordable(name: str, module: nn.Module, before: nn.Module | None) -> ConfigError:
    """The error for a module that is not what the original architecture has at ``name``; two classes
    of one name are named in full (module and qualified name)."""
    klass, other = type_of(module), None if before is None else type_of(before)
    shown = _class_path if other is not None and other.__qualname__ == klass.__qualname__ else _short_name
    got = "nothing" if other is None else f"a {shown(other)}"
    where = f"module '{name}'" if name else "the model"
    return ConfigError(f"save: {where} is a {shown(klass)} but the original architecture has "
                       f"{got} there. Only pruned widths, blocks replaced by nn.Identity and factorised layers "
                       f"(transforms=[decompose result]) can be recorded; pass the matching source.")


def _source_file(klass: type) -> Path | None:
    """The resolved file ``klass``'s module was run from (None: no file, e.g. a class typed in a REPL)."""
    file = getattr(sys.modules.get(klass.__module__), "__file__", None)
    return Path(file).resolve() if isinstance(file, str) else None


def layout_record(model: nn.Module, original: nn.Module, *, opaque: Collection[str] = (),
                  every_buffer: bool = False) -> dict[str, Any]:
    """How ``model`` differs in shape from ``original``, its un-pruned architecture, as JSON data.

    ``opaque``: names of modules another transform rebuilds (factorised layers); their insides
    are not compared. ``every_buffer``: record every non-persistent buffer, not only those that differ
    from ``original``'s (when the model loading builds on is not ``original``). A module whose type
    changed otherwise cannot be recorded (ConfigError).
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
        if before is None:
            raise _unrecordable(name, module, before)
        retyped = not same_class(type_of(module), type_of(before))
        if retyped and _is_replacement(type(module)):
            replaced[name] = _class_path(type(module))
        elif retyped and _unlisted(type(module)):
            raise ConfigError(f"save: module '{name}' is a {_class_path(type(module))}, which saved folders may "
                              f"not name yet. Add it to prunekit.io.layout.RECORDABLE_CLASSES.")
        elif retyped:
            raise _unrecordable(name, module, before)
        changed = changed_attributes(module, before)
        if changed:
            attributes[name] = changed
    record: dict[str, Any] = {"tensors": tensors, "attributes": attributes, "identity": identity,
                              "none": _dropped(model, original, opaque)}
    buffers = _sliced(model, original, changed=attributes, every=every_buffer)
    tied = tie_groups(model)
    # NOTE: only results that have them carry these keys, so every other manifest stays as it was.
    if replaced:
        record["replaced"] = replaced
    if buffers:
        record["buffers"] = buffers
    if tied or tie_groups(original):  # NOTE: [] too: the saved model broke a tie its architecture makes
        record["tied"] = tied
    return record


def changed_attributes(module: nn.Module, before: nn.Module) -> dict[str, Any]:
    """``module``'s plain attributes (encoded) whose value differs from ``before``'s."""
    old, new = _attributes(before), _attributes(module)
    return {k: v for k, v in new.items() if old.get(k, _NOT_RECORDABLE) != v}


def tie_groups(model: nn.Module) -> list[list[str]]:
    """The state_dict keys that hold one shared tensor (tied weights), in groups of two or more, in
    state_dict order: what a rebuilt model must tie again, and nothing else."""
    groups: dict[int, list[str]] = {}
    for key, value in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(value), []).append(key)
    return [keys for keys in groups.values() if len(keys) > 1]


def state_once(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` with each tensor that several keys share (tied weights) under its first
    key only: what :func:`prunekit.save` writes (loading ties the others again, as recorded)."""
    seen: set[int] = set()
    state: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict(keep_vars=True).items():
        if id(value) not in seen:  # NOTE: the identity tie_groups groups by
            seen.add(id(value))
            state[key] = value.detach()
    return state


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
    """A recordable prunekit class that takes a pruned module's place and rebuilds from the original's."""
    return _class_path(klass) in RECORDABLE_CLASSES and callable(getattr(klass, "from_module", None))


def _is_layout_object(klass: type) -> bool:
    """A recordable prunekit class whose instances a module attribute may hold, recorded by their fields."""
    return (_class_path(klass) in RECORDABLE_CLASSES and callable(getattr(klass, "layout_fields", None))
            and callable(getattr(klass, "from_layout", None)))


def _unlisted(klass: type) -> bool:
    """A prunekit class that could be recorded, but is not one of ``RECORDABLE_CLASSES``."""
    return klass.__module__.startswith(_OWN_PACKAGE) and _class_path(klass) not in RECORDABLE_CLASSES and (
        callable(getattr(klass, "from_module", None)) or callable(getattr(klass, "layout_fields", None)))


def _own_class(path: Any) -> Any:
    """The class a record names, only when it is one of ``RECORDABLE_CLASSES`` (else None); nothing
    else is imported."""
    if not isinstance(path, str) or path not in RECORDABLE_CLASSES:
        return None
    module_name, _, class_name = path.rpartition(".")
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


def _short_name(klass: type) -> str:
    return klass.__name__


def _replacement(path: Any, name: str, where: str) -> Any:
    """The class a ``replaced`` record names: only a prunekit class with ``from_module``."""
    klass = _own_class(path)
    if not isinstance(klass, type) or not issubclass(klass, nn.Module) or not _is_replacement(klass):
        raise DataError(f"{where}: module '{name}' is recorded as replaced by {path!r}, which is not a "
                        f"prunekit module class with from_module. Load it with the prunekit that saved "
                        f"it, or save the model again.")
    return klass


def _sliced(model: nn.Module, original: nn.Module, changed: Collection[str] = (),
            every: bool = False) -> dict[str, dict[str, Any]]:
    """The non-persistent buffers of every module where one differs from the original's in shape,
    dtype or value, or whose attributes differ from the original's (``changed``: module names);
    ``every``: all of them.

    They are not in the state_dict, so the architecture rebuilt from the record would bring them
    back as it makes them: at their old shape or dtype (a bf16 model's rotary table comes back fp32),
    with the value its constructor gives (not one set after), or derived again from its attributes
    (a sinusoidal table of the kept columns is not the table a narrower module makes); a loader that
    re-initialises them (transformers) is told the whole module is done, so all of that module's
    non-persistent buffers are kept. Values are compared only where the original has them (not on
    the meta device).
    """
    before = dict(original.named_buffers(remove_duplicate=False))
    out: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        own = {f"{name}.{attr}" if name else attr: module._buffers[attr]
               for attr in sorted(module._non_persistent_buffers_set) if module._buffers.get(attr) is not None}
        if every or name in changed or any(key in before and _differs(t, before[key]) for key, t in own.items()):
            out.update({key: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
                        for key, t in own.items() if key not in out})
    return out


def _differs(tensor: torch.Tensor, before: torch.Tensor) -> bool:
    """``tensor`` is not ``before`` as the original architecture makes it: shape, dtype or value."""
    if tensor.shape != before.shape or tensor.dtype != before.dtype:
        return True
    if tensor.device.type == "meta" or before.device.type == "meta":
        return False
    return not torch.equal(tensor.detach().cpu(), before.detach().cpu())


def sliced_buffers(model: nn.Module, layout: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The values of the buffers ``layout`` records (saved beside the weights)."""
    buffers = dict(model.named_buffers(remove_duplicate=False))
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
        _submodule_name(name, "identity", where)
        module_at(model, name, where)  # NOTE: raises the four-part error for a wrong architecture.
        model.set_submodule(name, nn.Identity())
    for name in layout.get("none", ()):
        parent, _, attr = _submodule_name(name, "none", where).rpartition(".")
        module_at(model, name, where)
        setattr(module_at(model, parent, where), attr, None)
    for name, path in layout.get("replaced", {}).items():
        klass = _replacement(path, _submodule_name(name, "replaced", where), where)
        model.set_submodule(name, klass.from_module(module_at(model, name, where)))
    return restore_attributes(model, layout["attributes"], where=where)


def _submodule_name(name: Any, key: str, where: str) -> str:
    if not isinstance(name, str) or not name:
        raise DataError(f"{where}: layout '{key}' names {name!r}, not a submodule. The file is damaged; save the "
                        f"model again.")
    return name


def restore_attributes(model: nn.Module, attributes: Mapping[str, Mapping[str, Any]], *,
                       where: str = "layout") -> nn.Module:
    """Set recorded attributes (module -> attribute -> encoded value), in place.

    A record sets only a plain attribute, never a method, property, tensor or submodule, and keeps
    its kind (a width stays an int, a name a str; a list may come back a tuple, an unset ``None`` a
    value): so a damaged or hostile manifest cannot replace ``forward`` or turn a width into a string.
    """
    for name, recorded in attributes.items():
        module = module_at(model, name, where)
        for attr, value in recorded.items():
            here = f"{where}: attribute '{attr}' of module '{name}'"
            holder, last = _holder(module, attr, here)  # NOTE: a settings object's field (``args.d_inner``)
            current = _plain_attribute(holder, last, value, here)
            new = _decode(value, current, here)
            if not _same_kind(new, current):
                raise DataError(f"{here} is recorded as {value!r} ({type(new).__name__}) but the module holds "
                                f"{type(current).__name__} values. Load it into the architecture it was saved from.")
            setattr(holder, last, new)
    return model


def _plain_attribute(holder: Any, name: str, value: Any, where: str) -> Any:
    """``holder``'s plain attribute ``name`` (None where it has none yet: one set after construction; a
    ``cached_property`` counts as one); a DataError where the name is a method, property, tensor or
    submodule."""
    if name in vars(holder):
        return vars(holder)[name]
    if value is None and _empty_slot(holder, name):
        return None  # NOTE: a submodule set to None (``none``), as a model built without it holds it
    static = inspect.getattr_static(holder, name, _NOT_RECORDABLE)  # NOTE: runs no property or __getattr__
    if isinstance(static, functools.cached_property):  # NOTE: its value is kept in the instance, as a plain one
        try:
            return getattr(holder, name)
        except Exception:  # NOTE: the layer's own code, on a model not yet whole: its kind is not known
            return None
    slots = ((holder._parameters, "parameter"), (holder._buffers, "buffer"), (holder._modules, "submodule")) \
        if isinstance(holder, nn.Module) else ()
    held = next((kind for d, kind in slots if name in d), None)
    if held is None and static is not _NOT_RECORDABLE and not isinstance(static, _Plain):
        routine = inspect.isroutine(static) or isinstance(static, (staticmethod, classmethod))
        held = "method" if routine else type(static).__name__  # NOTE: ``forward``, a property, a descriptor
    if held is not None:
        raise DataError(f"{where} is recorded, but that name is a {held} of the module, not a plain attribute. "
                        f"Load it into the architecture it was saved from.")
    return None if static is _NOT_RECORDABLE else static  # NOTE: a class-level default


def _same_kind(new: Any, current: Any) -> bool:
    """``new`` may replace ``current``: the same type; a list for a tuple (or back); ``None`` for a value
    (or back); a layer's own view of a config for the config."""
    if new is None or current is None or _is_layout_object(type(new)):
        return True
    if isinstance(new, (list, tuple)) and isinstance(current, (list, tuple)):
        return True
    return type(new) is type(current)


def _empty_slot(holder: Any, name: str) -> bool:
    return isinstance(holder, nn.Module) and name in holder._modules and holder._modules[name] is None


def _holder(module: nn.Module, attr: str, where: str) -> tuple[Any, str]:
    try:
        return dotted_holder(module, attr)
    except AttributeError:
        raise DataError(f"{where} is recorded but the module has no such attribute. Load it into the "
                        f"architecture it was saved from.") from None


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
    current = dict(model.named_buffers(remove_duplicate=False))
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


def restore_ties(model: nn.Module, layout: Mapping[str, Any], state: Mapping[str, torch.Tensor] | None = None, *,
                 where: str = "layout") -> nn.Module:
    """Tie the model's tensors as the recorded groups (``tied``) say, and untie every other, in place:
    a tie its architecture makes but the saved model broke (trained apart) is undone, and one made
    after construction is made again. Without a record (a folder written before it), a tie whose
    tensors were saved with different values (``state``) is undone; the weights come after."""
    if "tied" in layout:
        wanted = [list(keys) for keys in layout["tied"]]
    elif state is not None:
        wanted = [keys for keys in tie_groups(model) if _saved_alike(keys, state)]
    else:
        return model
    if _same_groups(tie_groups(model), wanted):
        return model
    for keys in tie_groups(model):
        for key in keys[1:]:
            module, attr = _slot(model, key, where)
            old = _slot_tensor(module, attr)
            _put(module, attr, nn.Parameter(old.detach().clone(), requires_grad=old.requires_grad)
                 if isinstance(old, nn.Parameter) else old.detach().clone())
    for keys in wanted:
        first = _slot_tensor(*_slot(model, keys[0], where))
        for key in keys[1:]:
            module, attr = _slot(model, key, where)
            other = _slot_tensor(module, attr)
            if other.shape != first.shape or other.dtype != first.dtype:
                raise DataError(f"{where}: tensors '{keys[0]}' and '{key}' are recorded as tied but this model "
                                f"has {tuple(first.shape)} {first.dtype} and {tuple(other.shape)} {other.dtype}. "
                                f"Load it into the architecture it was saved from.")
            _put(module, attr, first)
    return model


def ties_as_recorded(model: nn.Module, layout: Mapping[str, Any]) -> bool:
    """The model ties exactly the recorded groups (True where none are recorded)."""
    return "tied" not in layout or _same_groups(tie_groups(model), layout["tied"])


def _same_groups(got: Collection[Collection[str]], wanted: Collection[Collection[str]]) -> bool:
    return sorted(map(sorted, got)) == sorted(map(sorted, wanted))


def _saved_alike(keys: Collection[str], state: Mapping[str, torch.Tensor]) -> bool:
    """Every saved tensor of ``keys`` holds the same value (those not saved count as alike)."""
    saved = [state[k] for k in keys if k in state]
    return all(t.shape == saved[0].shape and t.dtype == saved[0].dtype and torch.equal(t, saved[0])
               for t in saved[1:])


def _slot(model: nn.Module, key: str, where: str) -> tuple[nn.Module, str]:
    """The module and attribute that hold state_dict entry ``key``."""
    path, _, attr = key.rpartition(".")
    try:
        module = model.get_submodule(path)
    except AttributeError:
        module = None
    if module is None or (module._parameters.get(attr) is None and module._buffers.get(attr) is None):
        raise DataError(f"{where}: tensor '{key}' is recorded as tied but the model has no such parameter or "
                        f"buffer. Load it into the architecture it was saved from.")
    return module, attr


def _slot_tensor(module: nn.Module, attr: str) -> torch.Tensor:
    """The parameter or buffer ``attr`` of ``module`` (:func:`_slot` found one)."""
    return next(t for t in (module._parameters.get(attr), module._buffers.get(attr)) if t is not None)


def _put(module: nn.Module, attr: str, tensor: torch.Tensor) -> None:
    if attr in module._parameters:
        module._parameters[attr] = tensor  # type: ignore[assignment]
    else:
        module._buffers[attr] = tensor


def restore_layout(model: nn.Module, layout: Mapping[str, Any], *, where: str = "layout") -> nn.Module:
    """Give ``model`` (the original architecture) a recorded layout, in place; returns it."""
    restore_tensors(restore_modules(model, layout, where=where), layout, where=where)
    return restore_ties(model, layout, where=where)


def _replace(owners: list[tuple[nn.Module, str]], empty: torch.Tensor, old: torch.Tensor) -> None:
    new: Any = nn.Parameter(empty, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else empty
    for module, attr in owners:
        if attr in module._parameters:
            module._parameters[attr] = new
        else:
            module._buffers[attr] = new
