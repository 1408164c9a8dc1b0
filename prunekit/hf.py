"""Hugging Face models in the one saved format: the folder is also a ``save_pretrained`` folder.

When every layer keeps the same width, pruning updates the config (every field that records a
width: ``hidden_size``, heads, ``intermediate_size``, ``d_model``, ...) and transformers' own
``from_pretrained`` rebuilds the model. When layers end up with different widths no config field
can say so; ``prunekit.save`` records the layout against what the saved config builds and
``prunekit.load`` loads through transformers' own ``from_pretrained`` with every module reshaped
to the recorded widths as it is built, so transformers' key renames and weight conversions (ViT's
legacy names, Mixtral's fused experts) apply. Nothing is unpickled; prunekit never downloads
(``local_files_only``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.errors import ConfigError, DataError, DataNotFoundError, require
from prunekit.io.files import load_json, read_weights

__all__ = ["is_hf", "reference", "settle_config", "restore_config", "write", "build", "read_state", "load_pretrained"]


def is_hf(model: nn.Module) -> bool:
    """A transformers ``PreTrainedModel`` (it has a config and ``save_pretrained``)."""
    return hasattr(model, "save_pretrained") and getattr(model, "config", None) is not None


def _from_config(model_class: Callable[..., nn.Module], config: Any) -> nn.Module:
    """Build ``model_class`` from ``config`` with fresh weights.

    Auto classes (``AutoModel``) have ``from_config`` but no ``config_class``; model classes and
    plain callables (``functools.partial(BertModel, add_pooling_layer=False)``) take the config.
    """
    if hasattr(model_class, "from_config") and not hasattr(model_class, "config_class"):
        return model_class.from_config(config)
    return model_class(config)


def reference(model: nn.Module) -> nn.Module:
    """What the model's own config builds once saved and read back (on the meta device): the layout
    is taken against it, so a model pruned the same in every layer records no differences.

    NOTE: read back, as ``from_pretrained`` reads it: a config may derive a field again from the
    others (UnlimitedOcr's ``head_dim = hidden_size // num_attention_heads``), so a width it held in
    memory is lost in the file; against the read-back config the layout records that width.
    """
    config = model.config
    with torch.device("meta"):
        return _from_config(type(model), type(config).from_dict(copy.deepcopy(config.to_dict())))


_UNCHANGED = object()
# (config, field, old value) for each setting settle_config wrote, so it can be undone
Settled = list[tuple[Any, str, Any]]


def settle_config(model: nn.Module, built: nn.Module) -> Settled:
    """Write into the model's config the settings the model changed on itself after it was built
    (``built``: :func:`reference` of the model); returns what it wrote, for :func:`restore_config`.

    BigBird switches to full attention on a short sequence and records it only in its modules'
    ``attention_type``; the stale config rebuilds the old modules, so the saved folder would not load
    as the model it holds. A setting (a str or bool) counts when every module that holds the config
    and the field differs from what the config builds there, all with one value.
    """
    built_modules = dict(built.named_modules())
    values: dict[tuple[int, str], set[Any]] = {}
    configs: dict[int, Any] = {}
    for name, module in model.named_modules():
        config, before = getattr(module, "config", None), built_modules.get(name)
        if config is None or before is None or getattr(before, "config", None) is None:
            continue
        for field, value in vars(module).items():
            # NOTE: settings only (str, bool); widths are the pruning's own config refresh, which
            # knows the field each module's width was built from.
            if (isinstance(value, (bool, str)) and field in vars(before) and hasattr(config, field)
                    and getattr(before, field) == getattr(config, field)):
                configs[id(config)] = config
                values.setdefault((id(config), field), set()).add(
                    value if value != getattr(before, field) else _UNCHANGED)
    saved = {id(c) for c in _configs(model.config)}  # NOTE: the configs config.json holds
    settled: Settled = []
    for (key, field), seen in values.items():
        if len(seen) == 1 and _UNCHANGED not in seen and key in saved:
            (value,) = seen
            settled.append((configs[key], field, getattr(configs[key], field)))
            setattr(configs[key], field, value)
    return settled


def _configs(config: Any) -> list[Any]:
    """``config`` and its sub-configs (``text_config``, ...), recursively."""
    out = [config]
    for value in vars(config).values():
        if hasattr(value, "to_dict") and hasattr(value, "model_type") and value is not config:
            out += _configs(value)
    return out


def restore_config(settled: Settled) -> None:
    """Undo :func:`settle_config` (``settled``: what it returned)."""
    for config, field, value in reversed(settled):
        setattr(config, field, value)


def write(model: nn.Module, folder: Path) -> None:
    """``model.save_pretrained(folder)`` with safetensors (config.json + model.safetensors)."""
    model.save_pretrained(folder, safe_serialization=True)  # type: ignore[operator]


def build(folder: Path, record: Mapping[str, Any], model_class: Callable[..., nn.Module] | None = None) -> nn.Module:
    """The model the folder's ``config.json`` builds: ``model_class``, else the recorded class."""
    transformers = require("transformers", feature="loading a Hugging Face model")
    model_class = _model_class(folder, record, model_class)
    config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    return _from_config(model_class, config)


def _model_class(folder: Path, record: Mapping[str, Any], model_class: Callable[..., nn.Module] | None) -> Any:
    transformers = require("transformers", feature="loading a Hugging Face model")
    if model_class is None:
        model_class = getattr(transformers, str(record.get("class")), None)
        if model_class is None:
            raise ConfigError(f"load: transformers has no class {record.get('class')!r} (named in "
                              f"'{folder / 'manifest.json'}'). Pass model=, an instance of the class "
                              f"the model was built with.")
    return model_class


def load_pretrained(folder: Path, record: Mapping[str, Any], model_class: Callable[..., nn.Module] | None,
                    reshape: Callable[[nn.Module], Any]) -> nn.Module | None:
    """The folder's model through transformers' ``from_pretrained``, ``reshape`` applied to it as
    it is built (before the weights are read), so per-layer widths load with transformers' own key
    renames and weight conversions. None for a class without ``from_pretrained`` (a plain callable):
    the caller then loads the raw weights.

    NOTE: a subclass whose ``__init__`` reshapes is handed to ``from_pretrained``; the result gets
    the real class back (the subclass adds no state). A key missing, unexpected or of another shape
    is refused, never re-initialised.
    """
    klass = _model_class(folder, record, model_class)
    if not isinstance(klass, type) or not hasattr(klass, "from_pretrained") or not hasattr(klass, "config_class"):
        return None

    class Shaped(klass):  # type: ignore[misc, valid-type]
        def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
            super().__init__(config, *args, **kwargs)
            kinds = {name: type(m) for name, m in self.named_modules()}
            reshape(self)
            # NOTE: a model's weight init may read a layer's weight through its parent (GPT-2's scales
            # attn.c_proj.weight); a factorised layer (an nn.Sequential) has none. Every weight is read
            # from the folder (a missing key is refused below), so the parent (not the model itself,
            # whose init also covers its own tensors) is marked initialised.
            for name, m in self.named_modules():
                parent = name.rpartition(".")[0]
                if parent and isinstance(m, nn.Sequential) and kinds.get(name, nn.Sequential) is not nn.Sequential:
                    self.get_submodule(parent)._is_hf_initialized = True

    # NOTE: transformers finds a class's key renames by its name and treats a class defined outside
    # its own modules as custom code (no renames): the subclass takes the class's names.
    Shaped.__name__, Shaped.__qualname__, Shaped.__module__ = klass.__name__, klass.__qualname__, klass.__module__
    try:
        model, info = Shaped.from_pretrained(folder, local_files_only=True, output_loading_info=True)
    except (RuntimeError, ValueError) as exc:  # NOTE: transformers refuses mismatched sizes itself
        raise DataError(f"load: '{folder}' does not match the model transformers builds from its config and "
                        f"the recorded layout: {str(exc).splitlines()[0]}. Load it into the architecture it was "
                        f"saved from.") from exc
    problems = {k: sorted(v) if not isinstance(v, list) else v for k, v in info.items()
                if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if problems:
        raise DataError(f"load: '{folder}' does not match the model transformers builds from its config "
                        f"and the recorded layout ({problems}). Load it into the architecture it was saved from.")
    model.__class__ = klass
    return model.eval()


def read_state(folder: Path) -> dict[str, torch.Tensor]:
    """The weights of a ``save_pretrained`` folder: one file, or the shards its index names."""
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file() or not index.is_file():
        if not single.is_file():
            raise DataNotFoundError(f"load: '{folder}' has no model.safetensors (or its index). Save the "
                                    f"model again with prunekit.save.")
        return read_weights(single)[0]
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(load_json(index)["weight_map"].values())):
        state.update(read_weights(folder / shard)[0])
    return state
