"""Hugging Face interop: save a pruned transformer with ``save_pretrained`` and load it back.

When every layer keeps the same width, pruning updates the config (``num_attention_heads``,
``num_key_value_heads``, ``intermediate_size``, ``hidden_size``) and plain ``from_pretrained``
rebuilds the model. When layers end up with different widths no config field can say so, so
:func:`save_pretrained` also writes ``prunekit_layout.json`` (each tensor's shape and the module
attributes that differ from what the config builds) and :func:`from_pretrained` applies it before
loading the weights. Nothing is unpickled; prunekit never downloads (``local_files_only``).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.errors import ConfigError, DataError, DataNotFoundError, require
from prunekit.io import layout_record, load_json, restore_layout, save_json

__all__ = ["save_pretrained", "from_pretrained", "LAYOUT_FILE"]

LAYOUT_FILE = "prunekit_layout.json"
_FORMAT = "prunekit.hf_layout"
_VERSION = 1


def _check_hf(model: nn.Module, where: str) -> None:
    if not hasattr(model, "save_pretrained") or getattr(model, "config", None) is None:
        raise ConfigError(f"{where}: {type(model).__name__} is not a Hugging Face PreTrainedModel (it has "
                          f"no config/save_pretrained). Use prunekit.save_pruned for other models.")


def _from_config(model_class: Callable[..., nn.Module], config: Any) -> nn.Module:
    """Build ``model_class`` from ``config`` with fresh weights.

    Auto classes (``AutoModel``) have ``from_config`` but no ``config_class``; model classes and
    plain callables (``functools.partial(BertModel, add_pooling_layer=False)``) take the config.
    """
    if hasattr(model_class, "from_config") and not hasattr(model_class, "config_class"):
        return model_class.from_config(config)
    return model_class(config)


def save_pretrained(model: nn.Module, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """``model.save_pretrained(path, **kwargs)`` plus the layout record that per-layer widths need.

    The layout is taken against the architecture the saved config builds, so a model pruned the
    same in every layer records no differences and also loads with the library's own
    ``from_pretrained``.
    """
    _check_hf(model, "save_pretrained")
    with torch.device("meta"):
        reference = _from_config(type(model), copy.deepcopy(model.config))
    record = {"format": _FORMAT, "version": _VERSION, "class": type(model).__name__,
              "layout": layout_record(model, reference)}
    json.dumps(record)  # NOTE: fail before writing anything.
    target = Path(path)
    model.save_pretrained(target, **kwargs)
    save_json(record, target / LAYOUT_FILE)
    return target


def _state_dict_from(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        return load_file(single)
    if index.is_file():
        shards = sorted(set(load_json(index)["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(folder / shard))
        return state
    raise DataNotFoundError(f"from_pretrained: '{folder}' has no model.safetensors (or its index). Save the "
                            f"model with prunekit.hf.save_pretrained (safetensors is the default).")


def _non_uniform_fields(config: Any) -> str:
    table = getattr(config, "prunekit_layer_widths", None) or {}
    return ", ".join(sorted(table)) or "per-layer widths"


def from_pretrained(path: str | os.PathLike[str], model_class: Callable[..., nn.Module] | None = None) -> nn.Module:
    """Load a model written by :func:`save_pretrained`, with each layer's own widths; never unpickles.

    Args:
        path: the folder ``save_pretrained`` wrote.
        model_class: the ``transformers`` class to build (e.g. ``BertModel`` or ``AutoModel``);
            by default the class named in the layout record (``transformers.<name>``).
    """
    transformers = require("transformers", feature="loading a Hugging Face model")
    folder = Path(path)
    layout_file = folder / LAYOUT_FILE
    if not layout_file.is_file():
        raise DataNotFoundError(f"from_pretrained: '{folder}' has no {LAYOUT_FILE}. Save the pruned model "
                                f"with prunekit.hf.save_pretrained, or load it with the library's own "
                                f"from_pretrained if every layer has the same width.")
    record = load_json(layout_file)
    if not isinstance(record, dict) or record.get("format") != _FORMAT or record.get("version") != _VERSION:
        raise DataError(f"'{layout_file}' is not a prunekit layout record of version {_VERSION}. Re-save "
                        f"the model with prunekit.hf.save_pretrained.")
    if model_class is None:
        model_class = getattr(transformers, record["class"], None)
        if model_class is None:
            raise ConfigError(f"from_pretrained: transformers has no class '{record['class']}' (named in "
                              f"'{layout_file}'). Pass model_class=, the class the model was built with.")
    config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    model = _from_config(model_class, config)
    restore_layout(model, record["layout"], where=str(layout_file))
    state = _state_dict_from(folder)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    tied = _tied_keys(model)
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise DataError(f"from_pretrained: the weights in '{folder}' do not match the recorded layout "
                        f"(missing {missing[:5]}, unexpected {unexpected[:5]}; the model has "
                        f"{_non_uniform_fields(config)} that differ by layer). Re-save it with "
                        f"prunekit.hf.save_pretrained from the same prunekit version.")
    return model.eval()


def _tied_keys(model: nn.Module) -> set[str]:
    """state_dict keys that share storage with another key (saved once by save_pretrained)."""
    seen: dict[int, str] = {}
    tied: set[str] = set()
    for key, value in model.state_dict(keep_vars=True).items():
        ident = id(value)
        if ident in seen:
            tied.update({key, seen[ident]})
        seen[ident] = key
    return tied
