"""A model at any point of a recipe, saved as weights + layout record and rebuilt without pickle.

The same format as ``prunekit.save_pruned`` (``weights.safetensors`` + ``plan.json``), so a stage
checkpoint or the exported model loads with ``prunekit.load(folder)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from prunekit.io import load_pruned, save_pruned

__all__ = ["save_model", "load_model"]


def save_model(model: nn.Module, architecture: dict[str, Any], folder: str | os.PathLike[str],
               plan: Any = None) -> Path:
    """Write ``folder/weights.safetensors`` + ``folder/plan.json`` (atomically)."""
    return save_pruned(model, plan, folder, architecture=architecture)


def load_model(folder: str | os.PathLike[str]) -> nn.Module:
    """Rebuild a model written by :func:`save_model` from its architecture and layout."""
    return load_pruned(folder)
