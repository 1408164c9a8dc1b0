"""Model specs: one string names a model wherever a model is named (CLI ``--model``, recipe ``model:``).

A spec is one of (the first form that matches wins):

- ``timm:NAME``: a timm model (``pip install 'prunekit[timm]'``), built with ``pretrained=False``.
- ``hf:PATH``: a local Hugging Face folder (config.json, optionally safetensors weights) or a
  config.json file; ``task`` picks the ``AutoModel...`` class.
- ``path/to/file.py:factory``: runs that file and calls ``factory(**kwargs)``. This runs your code.
- ``package.module:factory``: imports the module and calls ``factory(**kwargs)``. This runs your code.
- a folder prunekit saved (it holds ``manifest.json``): rebuilt by ``prunekit.io.load``.
- a zoo name (``prunekit models`` lists them): built by :func:`prunekit.models.create`.

``weights=`` is a local ``.safetensors`` file or a ``.pth``/``.pt``/``.bin`` state dict read with
``torch.load(weights_only=True)``; nothing is ever downloaded. Options whose value is None are
dropped (None means "the default"), so a caller can pass every option it has; a source record's
own None values (``{"spec": ..., "kwargs": {"weights_backbone": None}}`` given to ``prunekit.save``)
are the user's words and are passed as written, since a factory's default need not be None.
"""

from __future__ import annotations

import enum
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from prunekit.errors import ConfigError, DataError, DataNotFoundError, UnknownNameError

__all__ = ["SPEC_FORMS", "ModelSpec", "from_source", "parse_spec", "resolve", "source_of"]

SPEC_FORMS = ("a zoo name (`prunekit models` lists them), timm:NAME, hf:PATH, path/to/file.py:factory, "
              "package.module:factory, or a folder prunekit saved")
_OTHER_FORMS = "timm:NAME, hf:PATH, path/to/file.py:factory, package.module:factory, or a saved folder"
_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
_PATH_SUFFIXES = (".py", ".json", *_WEIGHT_SUFFIXES)


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec: ``kind`` is "zoo", "timm", "hf", "file", "module" or "saved"; ``target`` is the
    name, path or module; ``factory`` is the callable's name for "file" and "module"."""

    kind: str
    target: str
    factory: str = ""


def parse_spec(spec: str | os.PathLike[str]) -> ModelSpec:
    """Which kind of model ``spec`` names, without building it (files are not run)."""
    text = _text(spec)
    for prefix in ("timm:", "hf:"):
        if text.startswith(prefix):
            rest = text[len(prefix):].strip()
            if not rest:
                raise ConfigError(f"Model spec '{text}' names nothing after '{prefix}'; expected e.g. "
                                  f"'timm:resnet18' or 'hf:path/to/folder'.")
            return ModelSpec(prefix[:-1], rest)
    head, sep, tail = text.rpartition(":")
    if sep and head.endswith(".py"):
        if not tail.isidentifier():
            raise ConfigError(f"Model spec '{text}': '{tail}' is not a Python name; expected "
                              f"'path/to/file.py:factory' with the function that builds the model.")
        return ModelSpec("file", head, tail)
    if sep and _MODULE.fullmatch(head) and tail.isidentifier():
        return ModelSpec("module", head, tail)
    from prunekit.models import MODELS
    if text in MODELS and not _looks_like_path(text):
        return ModelSpec("zoo", text)
    if Path(text).expanduser().is_dir():
        return ModelSpec("saved", text)
    if Path(text).expanduser().exists() or _looks_like_path(text):
        raise _not_a_model(text)
    return ModelSpec("zoo", text)


def resolve(spec: str | os.PathLike[str], *, task: Any = None, weights: str | os.PathLike[str] | None = None,
            **kwargs: Any) -> nn.Module:
    """Build the model ``spec`` names (see the module docstring for the forms), offline.

    Args:
        task: a task name ("classification", "causal_lm", "embedding", ...) or a Task; it picks
            the ``AutoModel...`` class of an ``hf:`` spec and is ignored by the other forms.
        weights: a local ``.safetensors`` or ``.pth``/``.pt``/``.bin`` state dict loaded into the
            built model (a mismatch names the tensor). A saved folder carries its own.
        kwargs: options for the builder: ``num_classes``/``in_channels`` for zoo and timm models,
            config overrides for ``hf:``, the factory's keyword arguments for ``file.py:factory``.
    """
    return _build(spec, task=task, weights=weights, options=kwargs, folder_weights=True)


def source_of(spec: str | os.PathLike[str], **kwargs: Any) -> dict[str, Any]:
    """The JSON record a manifest stores to rebuild the dense source: ``{"spec", "kwargs"}``.

    File and folder paths in the spec, the ``weights`` file and ``os.PathLike`` options are made
    absolute, so the record still works from another working directory. Options must be JSON
    values (numbers, strings, booleans, lists, dicts); a ``task`` object is stored by name.
    """
    parsed = parse_spec(spec)
    options = {k: v for k, v in kwargs.items() if v is not None}
    record = {key: _json_option(key, value) for key, value in options.items()}
    return {"spec": _absolute_spec(parsed), "kwargs": record}


def from_source(record: Mapping[str, Any], *, load_weights: bool = True) -> nn.Module:
    """Rebuild the dense source model from a :func:`source_of` record.

    ``load_weights=False`` skips the ``weights`` file and an ``hf:`` folder's weights (random init),
    for a caller that loads its own weights on top.
    """
    if not isinstance(record, Mapping) or not isinstance(record.get("spec"), str) \
            or not isinstance(record.get("kwargs", {}), Mapping):
        raise DataError(f"Model source record {record!r}: expected {{'spec': str, 'kwargs': {{...}}}} as "
                        f"prunekit.models.source_of writes it. Re-save the model, or fix the manifest.")
    options = dict(record.get("kwargs", {}))
    task, weights = options.pop("task", None), options.pop("weights", None)
    # NOTE: source_of never records None; a None in the record is the user's (torchvision's
    # weights_backbone=None means no download, its default means one)
    return _build(record["spec"], task=task, weights=weights if load_weights else None, options=options,
                  folder_weights=load_weights, keep_none=True)


def _build(spec: str | os.PathLike[str], *, task: Any, weights: Any, options: Mapping[str, Any],
           folder_weights: bool, keep_none: bool = False) -> nn.Module:
    parsed = parse_spec(spec)
    given = dict(options) if keep_none else {k: v for k, v in options.items() if v is not None}
    return _BUILDERS[parsed.kind](parsed, _text(spec), _task_name(task), weights, given, folder_weights)


# ---- builders, one per kind -------------------------------------------------------------------

def _zoo(parsed: ModelSpec, spec: str, task: str | None, weights: Any, options: dict[str, Any],
         folder_weights: bool) -> nn.Module:
    from prunekit.models import create
    try:
        return create(parsed.target, weights=weights, **options)
    except UnknownNameError as exc:
        if parsed.target not in str(exc):
            raise
        raise UnknownNameError(f"{exc} Or name it as {_OTHER_FORMS}.") from None


def _timm(parsed: ModelSpec, spec: str, task: str | None, weights: Any, options: dict[str, Any],
         folder_weights: bool) -> nn.Module:
    from prunekit.models import timm_models
    return timm_models.create(parsed.target, weights=weights, **options)


def _hf(parsed: ModelSpec, spec: str, task: str | None, weights: Any, options: dict[str, Any],
         folder_weights: bool) -> nn.Module:
    from prunekit.models import hf_models
    model = hf_models.create(parsed.target, spec=spec, task=task, options=options, folder_weights=folder_weights)
    return _load_weights(model, weights)


def _factory(parsed: ModelSpec, spec: str, task: str | None, weights: Any, options: dict[str, Any],
         folder_weights: bool) -> nn.Module:
    from prunekit.models import factory
    if parsed.kind == "file":
        model = factory.from_file(parsed.target, parsed.factory, spec=spec, options=options)
    else:
        model = factory.from_module(parsed.target, parsed.factory, spec=spec, options=options)
    return _load_weights(model, weights)


def _saved(parsed: ModelSpec, spec: str, task: str | None, weights: Any, options: dict[str, Any],
         folder_weights: bool) -> nn.Module:
    from prunekit.io import load, model_folder

    folder = model_folder(Path(parsed.target).expanduser())  # NOTE: OUT stands for OUT/model
    if not (folder / "manifest.json").is_file():
        hint = (f" It holds config.json: for a Hugging Face folder write 'hf:{parsed.target}'."
                if (folder / "config.json").is_file() else "")
        raise DataNotFoundError(f"Model spec '{spec}': folder '{folder}' has no manifest.json; expected "
                                f"a folder prunekit saved, or another model spec ({SPEC_FORMS}).{hint}")
    if weights is not None or options:
        given = sorted(options) + (["weights"] if weights is not None else [])
        raise ConfigError(f"Model spec '{spec}' is a saved folder, which carries its own architecture and "
                          f"weights; got the options {given}. Drop them.")
    return load(folder)


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "zoo": _zoo, "timm": _timm, "hf": _hf, "file": _factory, "module": _factory, "saved": _saved,
}


def _load_weights(model: nn.Module, weights: str | os.PathLike[str] | None) -> nn.Module:
    if weights is None:
        return model
    from prunekit.models.weights import load_state, read_state_dict
    return load_state(model, read_state_dict(weights), source=os.fspath(weights))


# ---- helpers ----------------------------------------------------------------------------------

def _text(spec: object) -> str:
    text = os.fspath(spec) if isinstance(spec, os.PathLike) else spec
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"Model spec {spec!r}: expected a non-empty string naming a model: {SPEC_FORMS}.")
    return text.strip()


def _task_name(task: Any) -> str | None:
    if task is None or isinstance(task, str):
        return task
    name = getattr(task, "name", None)
    if not isinstance(name, str):
        raise ConfigError(f"task {task!r}: expected a task name such as 'classification' or a Task with "
                          f"a 'name'; got a {type(task).__name__}.")
    return name


def _looks_like_path(text: str) -> bool:
    return ("/" in text or os.sep in text or text.startswith(("~", "."))
            or text.lower().endswith(_PATH_SUFFIXES))


def _not_a_model(text: str) -> Exception:
    """The error for a spec that is a path but no model form: says which form it needs."""
    path = Path(text).expanduser()
    lower = text.lower()
    if not path.exists():
        return DataNotFoundError(f"Model spec '{text}': no such file or folder '{path.absolute()}'; "
                                 f"expected {SPEC_FORMS}. Check the path.")
    if lower.endswith(".py"):
        return ConfigError(f"Model spec '{text}' names a Python file but no factory; expected "
                           f"'{text}:factory' with the function that returns your nn.Module.")
    if lower.endswith(".json"):
        return ConfigError(f"Model spec '{text}' is a JSON file; for a Hugging Face config write 'hf:{text}'.")
    if lower.endswith(_WEIGHT_SUFFIXES):
        return ConfigError(f"Model spec '{text}' is a weights file, not a model; name the model "
                           f"({SPEC_FORMS}) and pass this file as weights (--weights).")
    return ConfigError(f"Model spec '{text}' is a file but not a model; expected {SPEC_FORMS}.")


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().absolute())


def _absolute_spec(parsed: ModelSpec) -> str:
    if parsed.kind == "file":
        return f"{_absolute(parsed.target)}:{parsed.factory}"
    if parsed.kind == "hf":
        return f"hf:{_absolute(parsed.target)}"
    if parsed.kind == "saved":
        return _absolute(parsed.target)
    if parsed.kind == "module":
        return f"{parsed.target}:{parsed.factory}"
    return f"{parsed.kind}:{parsed.target}" if parsed.kind == "timm" else parsed.target


def _json_option(key: str, value: Any) -> Any:
    """``value`` as JSON data; paths absolute (see :func:`source_of`)."""
    if key == "task":
        return _task_name(value)
    if isinstance(value, enum.Enum):  # NOTE: torchvision weights enums are stored by member name.
        return value.name
    if isinstance(value, os.PathLike) or (key == "weights" and isinstance(value, str)
                                          and (_looks_like_path(value) or Path(value).exists())):
        return _absolute(os.fspath(value))
    if isinstance(value, tuple):
        value = list(value)
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Model option '{key}' = {value!r} cannot be stored in manifest.json ({exc}); "
                          f"expected JSON values (numbers, strings, booleans, lists, dicts).") from None
    return value
