"""A model at any point of a recipe, saved in the one format (``prunekit.save``) and rebuilt.

A checkpoint is an ordinary saved folder: the recipe's model spec as the source, the plans of its
prune stages and the factorised layers of a decompose stage as transforms, so
``prunekit.load(folder)`` reads a checkpoint and the exported model alike.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from prunekit.io import load, read_manifest, save

__all__ = ["save_model", "load_state"]


def _source(architecture: Mapping[str, Any]) -> dict[str, Any]:
    """``{"model": name, **kwargs}`` (the runner's form) as a manifest source record."""
    kwargs = {k: v for k, v in architecture.items() if k != "model"}
    return {"spec": architecture["model"], "kwargs": kwargs}


def save_model(model: nn.Module, architecture: Mapping[str, Any], folder: str | os.PathLike[str], *,
               plans: Sequence[Mapping[str, Any]] = (), factorised: Sequence[Any] | None = None,
               extra: Sequence[Mapping[str, Any]] = (), data: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` (replacing an earlier checkpoint in ``folder``); ``plans`` are the applied
    plans' dicts, ``factorised`` the LayerRecords of a decompose stage (they hold each layer's shape),
    ``extra`` further transform records (a torch int8 ``quantize`` record, re-applied on load), ``data``
    the manifest's record of the data the model was made for."""
    transforms: list[Any] = [{"kind": "prune", "plan": dict(p)} for p in plans]
    if factorised:
        transforms.append(list(factorised))
    transforms.extend(dict(record) for record in extra)
    return save(model, folder, source=_source(architecture), transforms=transforms, overwrite=True, data=data)


def load_state(folder: str | os.PathLike[str]) -> tuple[nn.Module, list[Any]]:
    """``(model, factorised layer records)`` of a :func:`save_model` folder."""
    manifest = read_manifest(Path(folder))
    layers = [layer for t in manifest.of_kind("factorise") for layer in t["layers"]]
    return load(folder).train(), [_Layer(e["name"], e["kind"], tuple(e["ranks"]), tuple(e["shape"]))
                                  for e in layers]


@dataclass(frozen=True)
class _Layer:
    """What a resumed run keeps of a factorised layer record."""

    name: str
    kind: str
    ranks: tuple[int, ...]
    shape: tuple[int, ...]
