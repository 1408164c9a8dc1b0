"""Transforms as manifest records, and how the two that change module types are rebuilt.

``record(t)`` turns what the caller passes to :func:`prunekit.save` into a JSON record: a
mapping with a ``kind`` as given, a :class:`~prunekit.structured.Plan` (``prune``), a
:class:`~prunekit.decompose.DecomposeResult` or a list of its layer records (``factorise``), or a
:class:`~prunekit.decompose.Partition` (``partition``). ``factorise`` replaces layers by their
shells; ``partition`` retraces the rebuilt model and cuts it at the recorded nodes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from prunekit.errors import ConfigError, DataError
from prunekit.io.files import require_json
from prunekit.io.manifest import KINDS

__all__ = ["record", "factorised_names", "check_factorised", "note_source_shapes", "restore_factorised",
           "factorised_attributes", "example_inputs"]

_LAYER_FIELDS = ("name", "kind", "ranks", "shape")


def _layer(entry: Any) -> dict[str, Any]:
    values = dict(entry) if isinstance(entry, Mapping) else {f: getattr(entry, f, None) for f in _LAYER_FIELDS}
    name, ranks, shape = values.get("name"), values.get("ranks"), values.get("shape")
    if not isinstance(name, str) or ranks is None or shape is None:
        raise ConfigError(f"save: a factorised layer record needs name, kind, ranks and shape; got "
                          f"{entry!r}. Pass the DecomposeResult (or its .layers).")
    return {"name": name, "kind": values.get("kind"), "ranks": [int(r) for r in ranks],
            "shape": [int(s) for s in shape]}


def record(transform: Any) -> dict[str, Any]:
    """The manifest record of one transform (see the module docstring for what is accepted)."""
    if isinstance(transform, Mapping):
        out = dict(transform)
    elif hasattr(transform, "stages") and hasattr(transform, "manifest"):
        manifest = dict(transform.manifest)
        out = {"kind": "partition", **{k: v for k, v in manifest.items() if k not in ("format", "version")}}
    elif hasattr(transform, "layers") or (isinstance(transform, Sequence) and not isinstance(transform, str)):
        layers = transform.layers if hasattr(transform, "layers") else transform
        out = {"kind": "factorise", "layers": [_layer(e) for e in layers]}
    elif hasattr(transform, "to_dict") and hasattr(transform, "keep"):
        out = {"kind": "prune", "plan": transform.to_dict()}
    else:
        raise ConfigError(f"save: cannot record the transform {type(transform).__name__}. Pass a Plan, a "
                          f"DecomposeResult, a Partition, or a mapping with a 'kind' in {KINDS}.")
    if out.get("kind") not in KINDS:
        raise ConfigError(f"save: transform kind {out.get('kind')!r} is not one of {', '.join(KINDS)}. "
                          f"Pass e.g. {{'kind': 'prune', 'plan': plan.to_dict()}}.")
    if out["kind"] == "factorise":
        out["layers"] = [_layer(e) for e in out.get("layers", ())]
    require_json(out, f"save: the {out['kind']} transform", "Pass plain numbers, strings, lists and dicts.")
    return out


def factorised_names(transforms: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every module name a ``factorise`` transform replaced."""
    return [layer["name"] for t in transforms if t["kind"] == "factorise" for layer in t["layers"]]


def check_factorised(model: nn.Module, transforms: Sequence[Mapping[str, Any]]) -> None:
    """Each recorded factorised layer must be an ``nn.Sequential`` in the model being saved."""
    modules = dict(model.named_modules())
    for name in factorised_names(transforms):
        if not isinstance(modules.get(name), nn.Sequential):
            raise ConfigError(f"save: '{name}' is recorded as factorised but the model has "
                              f"{type(modules.get(name)).__name__} there. Pass the model returned "
                              f"with these layers (result.model).")


def _weight(module: nn.Module, where: str, name: str) -> torch.Tensor:
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise DataError(f"{where}: '{name}' is recorded as a factorised layer but this model has a "
                        f"{type(module).__name__} there. Load it into the architecture it was saved from.")
    return weight


def _stand_in(module: nn.Module, shape: Sequence[int], where: str, name: str,
              device: torch.device | str | None = None) -> nn.Module:
    """``module`` with the weight shape it had when factorised (pruned before, perhaps); ``device``:
    a new one there even when the shape is the same (``"meta"``: only its attributes are read)."""
    w = _weight(module, where, name)
    if list(w.shape) == list(shape) and (device is None or not isinstance(module, (nn.Linear, nn.Conv2d))):
        return module
    bias = getattr(module, "bias", None) is not None
    make = {"device": w.device if device is None else device, "dtype": w.dtype}
    if isinstance(module, nn.Linear) and len(shape) == 2:
        return nn.utils.skip_init(nn.Linear, shape[1], shape[0], bias=bias, **make)
    if isinstance(module, nn.Conv2d) and len(shape) == 4:
        return nn.utils.skip_init(nn.Conv2d, shape[1] * module.groups, shape[0], module.kernel_size,
                                  stride=module.stride, padding=module.padding, dilation=module.dilation,
                                  groups=module.groups, bias=bias, padding_mode=module.padding_mode, **make)
    raise DataError(f"{where}: '{name}' had weight shape {list(shape)} when factorised; this model's is "
                    f"{list(w.shape)}. Load it into the architecture it was factorised from.")


def note_source_shapes(records: Sequence[dict[str, Any]], reference: nn.Module) -> None:
    """Record the weight shape each factorised layer has in the source model (checked on load)."""
    modules = dict(reference.named_modules())
    for t in records:
        for layer in t["layers"] if t["kind"] == "factorise" else ():
            weight = getattr(modules.get(layer["name"]), "weight", None)
            if isinstance(weight, torch.Tensor):
                layer["source_shape"] = list(weight.shape)


def restore_factorised(model: nn.Module, transform: Mapping[str, Any], where: str) -> None:
    """Replace each recorded layer of ``model`` by its empty factorised shell, in place."""
    from prunekit.decompose.layers import shell
    from prunekit.io.layout import module_at

    for layer in transform["layers"]:
        original = module_at(model, layer["name"], where)
        source_shape, got = layer.get("source_shape"), list(_weight(original, where, layer["name"]).shape)
        if source_shape is not None and got != list(source_shape):
            raise DataError(f"{where}: '{layer['name']}' had weight shape {list(source_shape)} in the source "
                            f"model when saved; this model's is {got}. Load it into the architecture it "
                            f"was saved from.")
        base = _stand_in(original, layer["shape"], where, layer["name"])
        model.set_submodule(layer["name"], shell(layer["kind"], base, layer["ranks"]))


def factorised_attributes(model: nn.Module, reference: nn.Module,
                          transforms: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The attributes of the modules inside ``model``'s factorised layers that differ from the shells
    loading rebuilds there (at the widths they were factorised at): a result pruned after it was
    factorised has narrower ones (``layout["factorised_attributes"]``, set after the shells are built)."""
    from prunekit.decompose.layers import shell
    from prunekit.io.layout import changed_attributes, same_class, type_of

    names = factorised_names(transforms)
    if not names:
        return {}
    built = dict(reference.named_modules())
    for layer in (layer for t in transforms if t["kind"] == "factorise" for layer in t["layers"]):
        name, base = layer["name"], built.get(layer["name"])
        if base is None:
            continue
        made = shell(layer["kind"], _stand_in(base, layer["shape"], "save", name, device="meta"), layer["ranks"])
        built = {k: m for k, m in built.items() if not _within(k, [name])}
        built.update({f"{name}.{sub}" if sub else name: m for sub, m in made.named_modules()})
    out: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        before = built.get(name)
        if _within(name, names) and before is not None and same_class(type_of(module), type_of(before)):
            changed = changed_attributes(module, before)
            if changed:
                out[name] = changed
    return out


def _within(name: str, roots: Sequence[str]) -> bool:
    return any(name == r or name.startswith(r + ".") for r in roots)


def example_inputs(specs: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, ...]:
    """Inputs of the recorded shapes and dtypes, as the partition that recorded them makes them."""
    from prunekit.decompose.partition import example_inputs as from_specs

    return from_specs(specs)
