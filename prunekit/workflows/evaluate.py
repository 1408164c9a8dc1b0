"""The ``eval`` workflow: accuracy and loss of a model (a name with weights, or a saved folder)."""

from __future__ import annotations

import os
from typing import Any

import torch

from prunekit.errors import ConfigError
from prunekit.measure import evaluate as evaluate_split
from prunekit.workflows.common import build, capped, check_device, finish

__all__ = ["SPLITS", "evaluate"]

SPLITS = ("train", "val", "test")


def evaluate(model: str, data: str = "fashion_mnist", *, weights: str | None = None,
             data_dir: str | None = None, split: str = "test", batch_size: int = 512,
             max_batches: int | None = None, device: str | torch.device | None = None,
             out_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Accuracy and loss of ``model`` (with ``weights``) on one split of ``data``.

    ``max_batches`` evaluates only the first that many batches of ``batch_size`` (a quick look);
    ``device`` is where the batches run. With ``out_dir``: ``results.json``.
    """
    if split not in SPLITS:
        raise ConfigError(f"eval: 'split' must be one of {', '.join(SPLITS)}; got '{split}'. "
                          f"Pass e.g. --split test.")
    target = check_device(device)
    net, splits = build(model, data, data_dir=data_dir, weights=weights)
    dataset = capped(getattr(splits, split), max_batches, batch_size)
    if target is not None:
        net.to(target)
    metrics = evaluate_split(net, dataset, batch_size=batch_size, device=target)
    results = {"command": "eval", "model": model, "data": splits.name, "split": split,
               "weights": weights, "max_batches": max_batches, "metrics": dict(metrics)}
    return finish(results, out_dir)
