"""prunekit: make PyTorch models smaller and faster, and prove it with measurements.

The public API is the short list below, grouped in the order data flows (see DESIGN.md). It is
lazy (PEP 562): ``import prunekit`` loads no sub-package, so it costs little beyond ``import
torch`` and pulls in none of torchvision, transformers, pydantic, yaml, onnx or tensorly; a name
imports its module on first use. Sub-packages hold the rest: ``prunekit.data``, ``prunekit.models``,
``prunekit.graph``, ``prunekit.importance``, ``prunekit.structured``, ``prunekit.sparsity``,
``prunekit.decompose``, ``prunekit.gates``, ``prunekit.recipes``, ``prunekit.recover``,
``prunekit.measure``, ``prunekit.hf``.
"""

from __future__ import annotations

import importlib
from typing import Any

from prunekit.version import __version__ as __version__

# name -> (module, attribute in that module). One place lists the whole public surface.
_PUBLIC: dict[str, tuple[str, str]] = {
    # models and data in
    "create_model": ("prunekit.models", "create"),
    "load_data": ("prunekit.data", "load"),
    "DataSplits": ("prunekit.data", "DataSplits"),
    # graph: which channels must be cut together
    "DependencyGraph": ("prunekit.graph", "DependencyGraph"),
    "ChannelGroup": ("prunekit.graph", "ChannelGroup"),
    "register_rule": ("prunekit.graph", "register_rule"),
    # structured pruning: scores -> plan -> smaller model
    "StructuredPruner": ("prunekit.structured", "StructuredPruner"),
    "Target": ("prunekit.structured", "Target"),
    "Plan": ("prunekit.structured", "Plan"),
    "allocate": ("prunekit.structured", "allocate"),
    "apply": ("prunekit.structured", "apply"),
    "prune_depth": ("prunekit.structured", "prune_depth"),
    "ChannelGates": ("prunekit.gates", "ChannelGates"),
    # sparsity and decomposition
    "Sparsifier": ("prunekit.sparsity", "Sparsifier"),
    "one_shot": ("prunekit.sparsity", "one_shot"),
    "decompose": ("prunekit.decompose", "decompose"),
    # recovery: the training loop, on any iterable of batches, for a task
    "TrainConfig": ("prunekit.recover", "TrainConfig"),
    "train": ("prunekit.recover", "train"),
    # measurement
    "profile": ("prunekit.measure", "profile"),
    "Profile": ("prunekit.measure", "Profile"),
    "compare": ("prunekit.measure", "compare"),
    "evaluate": ("prunekit.measure", "evaluate"),
    # recipes
    "run_recipe": ("prunekit.recipes", "run_recipe"),
    # saved results: model.safetensors + manifest.json, no pickle
    "save": ("prunekit.io", "save"),
    "load": ("prunekit.io", "load"),
    # errors
    "PrunekitError": ("prunekit.errors", "PrunekitError"),
}

_SUBPACKAGES = frozenset({
    "data", "models", "graph", "importance", "structured", "sparsity", "decompose", "gates",
    "recipes", "recover", "measure", "hf", "io", "errors", "cli", "integrations", "registry",
    "tasks", "workflows", "config", "version",
})

__all__ = [
    "ChannelGates",
    "ChannelGroup",
    "DataSplits",
    "DependencyGraph",
    "Plan",
    "Profile",
    "PrunekitError",
    "Sparsifier",
    "StructuredPruner",
    "Target",
    "TrainConfig",
    "allocate",
    "apply",
    "compare",
    "create_model",
    "decompose",
    "evaluate",
    "load",
    "load_data",
    "one_shot",
    "profile",
    "prune_depth",
    "register_rule",
    "run_recipe",
    "save",
    "train",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (and cache the name here)."""
    if name in _PUBLIC:
        module, attr = _PUBLIC[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'prunekit' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__"])
