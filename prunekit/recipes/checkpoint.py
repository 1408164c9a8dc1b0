"""A model at any point of a recipe, saved as weights + records and rebuilt without pickle.

Before any decomposition the format is ``prunekit.save_pruned``'s (``weights.safetensors`` +
``plan.json``), so a checkpoint or the exported model loads with ``prunekit.load(folder)``. After
a ``decompose`` stage the folder holds ``base_layout.json`` (the channel layout of the model that
was factorised, against the original architecture) and ``decomposed/`` (``save_decomposed``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from prunekit.errors import ConfigError
from prunekit.io import layout_record, load_json, load_pruned, restore_layout, save_json, save_pruned

__all__ = ["save_model", "load_model", "load_state"]

BASE_LAYOUT = "base_layout.json"
DECOMPOSED = "decomposed"


def save_model(model: nn.Module, architecture: dict[str, Any], folder: str | os.PathLike[str], *,
               plan: Any = None, factorised_from: nn.Module | None = None,
               factorised: Sequence[Any] | None = None) -> Path:
    """Write ``model``; pass ``factorised_from`` (the model ``decompose`` started from) and the
    ``factorised`` layer records once the model holds factorised layers."""
    target = Path(folder)
    if not factorised:
        return save_pruned(model, plan, target, architecture=architecture)
    from prunekit.decompose import save_decomposed

    original = _build(architecture, "save_model")
    save_decomposed(model, list(factorised), target / DECOMPOSED)
    save_json({"architecture": dict(architecture), "layout": layout_record(factorised_from, original)},
              target / BASE_LAYOUT)
    return target


def _build(architecture: dict[str, Any], where: str) -> nn.Module:
    """The dense model ``prunekit.models.create(**architecture)`` names."""
    from prunekit.models import create

    spec = dict(architecture)
    name = spec.pop("model", None)
    if not isinstance(name, str):
        raise ConfigError(f"{where}: the architecture {dict(architecture)} has no 'model' name. Save "
                          f"the checkpoint with e.g. {{'model': 'resnet20', 'num_classes': 10}}.")
    return create(name, **spec)


@dataclass(frozen=True)
class _Factorised:
    """What ``save_decomposed`` reads of a layer record."""

    name: str
    kind: str
    ranks: tuple[int, ...]
    shape: tuple[int, ...]


def load_state(folder: str | os.PathLike[str]) -> tuple[nn.Module, nn.Module | None, list[Any]]:
    """``(model, factorised_from, factorised layer records)`` of a :func:`save_model` folder."""
    source = Path(folder)
    if not (source / BASE_LAYOUT).is_file():
        return load_pruned(source), None, []
    from prunekit.decompose import load_decomposed

    record = load_json(source / BASE_LAYOUT)
    base = restore_layout(_build(record["architecture"], str(source / BASE_LAYOUT)), record["layout"],
                          where=str(source / BASE_LAYOUT))
    layers = [_Factorised(e["name"], e["kind"], tuple(e["ranks"]), tuple(e["shape"]))
              for e in load_json(source / DECOMPOSED / "decomposition.json")["layers"]]
    return load_decomposed(source / DECOMPOSED, model=base), base, layers


def load_model(folder: str | os.PathLike[str]) -> nn.Module:
    """Rebuild a model written by :func:`save_model`."""
    return load_state(folder)[0]
