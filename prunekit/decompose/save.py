"""Save a factorised model as safetensors + a JSON layout record, and rebuild it; no pickle.

The folder holds ``weights.safetensors`` and ``decomposition.json``: which module became which
kind at which ranks (and, optionally, how to build the un-factorised architecture). Loading takes
the un-factorised model (the original, or a model pruned by prunekit and loaded with
``prunekit.load``), replaces each recorded module by its empty shell and loads the weights strictly.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from prunekit.decompose.layers import KINDS, shell
from prunekit.decompose.lowrank import DecomposeResult, LayerRecord
from prunekit.errors import ConfigError, DataError
from prunekit.io import load_json, load_weights, save_json, save_weights

__all__ = ["save_decomposed", "load_decomposed", "RECORD_FILE", "WEIGHTS_FILE"]

RECORD_FORMAT = "prunekit.decomposed"
RECORD_VERSION = 1
RECORD_FILE = "decomposition.json"
WEIGHTS_FILE = "weights.safetensors"


def save_decomposed(model: nn.Module, layers: DecomposeResult | Sequence[LayerRecord],
                    path_dir: str | os.PathLike[str], *,
                    architecture: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` (factorised by :func:`decompose`) to ``path_dir``; returns the folder.

    ``layers`` is the :class:`DecomposeResult` (or its ``layers``). ``architecture``, e.g.
    ``{"model": "resnet20", "num_classes": 10, "in_channels": 1}``, lets :func:`load_decomposed`
    build the un-factorised model itself. The folder appears complete or not at all.
    """
    records = layers.layers if isinstance(layers, DecomposeResult) else tuple(layers)
    modules = dict(model.named_modules())
    for r in records:
        if not isinstance(modules.get(r.name), nn.Sequential):
            raise ConfigError(f"save_decomposed: '{r.name}' is recorded as factorised but the model has "
                              f"{type(modules.get(r.name)).__name__} there. Pass the model returned "
                              f"with these layers (result.model).")
    record = {"format": RECORD_FORMAT, "version": RECORD_VERSION,
              "architecture": dict(architecture) if architecture is not None else None,
              "layers": [{"name": r.name, "kind": r.kind, "ranks": list(r.ranks), "shape": list(r.shape)}
                         for r in records]}
    json.dumps(record)  # NOTE: fail before writing anything if the architecture is not JSON data.
    target = Path(path_dir)
    if target.exists() and any(target.iterdir()) and not (target / RECORD_FILE).is_file():
        raise ConfigError(f"save_decomposed: '{target}' exists and is not an earlier save (no "
                          f"{RECORD_FILE}). Pick a new or empty folder; nothing was written.")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        save_weights(model, tmp / WEIGHTS_FILE, metadata={"format": RECORD_FORMAT})
        save_json(record, tmp / RECORD_FILE)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


def _check(record: Any, file: Path) -> list[dict[str, Any]]:
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise DataError(f"'{file}' is not a prunekit decomposition record (expected \"format\": "
                        f"\"{RECORD_FORMAT}\"). Save the model with prunekit.decompose.save_decomposed.")
    if record.get("version") != RECORD_VERSION:
        raise DataError(f"'{file}' has record version {record.get('version')!r}; this prunekit reads "
                        f"version {RECORD_VERSION}. Re-save it with this prunekit version.")
    layers = record.get("layers")
    if not isinstance(layers, list) or not all(
            isinstance(x, dict) and x.get("kind") in KINDS and isinstance(x.get("name"), str)
            and isinstance(x.get("ranks"), list) for x in layers):
        raise DataError(f"'{file}' has no valid 'layers' list (name, kind in {KINDS}, ranks). The file "
                        f"is damaged; re-save the model.")
    return layers


def load_decomposed(path_dir: str | os.PathLike[str], model: nn.Module | None = None) -> nn.Module:
    """Rebuild a model saved by :func:`save_decomposed`; ``model`` (not changed) is the un-factorised one.

    Without ``model`` the record's ``architecture`` is built with ``prunekit.models.create``.
    """
    folder = Path(path_dir)
    record = load_json(folder / RECORD_FILE)
    layers = _check(record, folder / RECORD_FILE)
    if model is None:
        spec = dict(record.get("architecture") or {})
        if "model" not in spec:
            raise ConfigError(f"load_decomposed: '{folder / RECORD_FILE}' names no architecture; pass the "
                              f"un-factorised model, e.g. load_decomposed(path, model=resnet20()).")
        from prunekit.models import create

        built = create(spec.pop("model"), **spec)
    else:
        built = copy.deepcopy(model)
    for entry in layers:
        try:
            original = built.get_submodule(entry["name"])
        except AttributeError as exc:
            raise DataError(f"'{folder / RECORD_FILE}': module '{entry['name']}' is recorded but the model "
                            f"has no such submodule. Pass the model it was factorised from.") from exc
        if list(original.weight.shape) != list(entry.get("shape", original.weight.shape)):
            raise DataError(f"'{folder / RECORD_FILE}': '{entry['name']}' had weight shape {entry['shape']} "
                            f"when factorised; this model's is {list(original.weight.shape)}. Pass the "
                            f"model it was factorised from (a pruned one: load it with prunekit.load first).")
        built.set_submodule(entry["name"], shell(entry["kind"], original, entry["ranks"]))
    return load_weights(built, folder / WEIGHTS_FILE, strict=True)
