"""The ``profile`` workflow: params, MACs, size, latency (and accuracy with data) of one model."""

from __future__ import annotations

import os
from typing import Any

import torch

from prunekit import models
from prunekit.data import DataSplits
from prunekit.measure import Profile, compare
from prunekit.workflows.common import (
    Measure,
    build,
    finish,
    load_model,
    measure_profile,
    source_architecture,
)

__all__ = ["example_input", "profile"]


def example_input(model: str, splits: DataSplits | None, in_channels: int | None = None,
                  batch_size: int = 1) -> torch.Tensor:
    """An input batch: the data's first test inputs, else the input shape of the registry model
    ``model`` names (a saved folder: the model it was made from)."""
    if splits is not None:
        return splits.example_input(batch_size)
    architecture = source_architecture(model, None, in_channels)
    channels = in_channels if in_channels is not None else architecture.get("in_channels")
    return models.example_input(architecture["model"], batch_size=batch_size, in_channels=channels)


def profile(model: str, data: str | None = None, *, weights: str | None = None,
            data_dir: str | None = None, in_channels: int | None = None,
            measure: Measure | None = None,
            out_dir: str | os.PathLike[str] | None = None) -> tuple[Profile, dict[str, Any]]:
    """Params, MACs, size, latency (and accuracy when ``data`` is given) of one model.

    ``measure.max_eval_batches`` caps the accuracy evaluation. With ``out_dir``: ``results.json``.
    """
    measure = measure or Measure()
    splits: DataSplits | None = None
    if data:
        net, splits = build(model, data, data_dir=data_dir, weights=weights)
    else:
        net = load_model(model, weights=weights, in_channels=in_channels)
    prof = measure_profile(net, example_input(model, splits, in_channels), model, measure,
                           splits.test if splits is not None else None)
    results = {"command": "profile", "model": model, "data": splits.name if splits else None,
               "weights": weights, "profile": prof.to_dict(), "table": compare(prof)}
    return prof, finish(results, out_dir)
