"""The ``eval`` workflow: a model's task metric (accuracy and loss, perplexity...) on one split of its data."""

from __future__ import annotations

import os
from typing import Any

import torch

from prunekit.errors import ConfigError
from prunekit.measure import evaluate as evaluate_split
from prunekit.data import DataSplits
from prunekit.workflows.common import (
    build,
    capped,
    check_device,
    check_split,
    finish,
    task_of,
    with_teacher,
)

__all__ = ["SPLITS", "evaluate"]

SPLITS = ("train", "val", "test")


def evaluate(model: str, data: str = "fashion_mnist", *, weights: str | None = None,
             data_dir: str | None = None, tokenizer: str | None = None, block_size: int | None = None,
             image_size: int | tuple[int, int] | None = None,
             split: str | None = None, batch_size: int = 512,
             max_batches: int | None = None, device: str | torch.device | None = None,
             out_dir: str | os.PathLike[str] | None = None, task: str | None = None) -> dict[str, Any]:
    """``task``'s metrics (default: what the data fits) of ``model`` (with ``weights``) on one split
    of ``data``.

    ``split``: train, val or test; None: test, or val for data without a test split (a text file
    is cut into train and val blocks only); a split the data lacks when asked for is an error.
    ``max_batches`` evaluates only the first that many batches (of ``batch_size`` for image data; a
    quick look); ``device`` is where the batches run. With ``out_dir``: ``results.json``.
    """
    if split is not None and split not in SPLITS:
        raise ConfigError(f"eval: 'split' must be one of {', '.join(SPLITS)}; got '{split}'. "
                          f"Pass e.g. --split test.")
    target = check_device(device)
    net, splits = build(model, data, data_dir=data_dir, weights=weights, task=task, int8_ok=True,
                         tokenizer=tokenizer, block_size=block_size, image_size=image_size)
    scorer = with_teacher(task_of(splits, task), net, model)
    if split is None:
        split = "test" if _holds(splits, "test") else "val"
    dataset = getattr(splits, split)
    if dataset is None:
        raise ConfigError(f"eval: '{data}' has no {split} split; expected one of the splits it has. "
                          f"Pass --split val.")
    others = [name for name in SPLITS if name != split and _holds(splits, name)]
    check_split(splits, split, data, f"eval --split {split}", fix=f"Pass --split {others[-1]}." if others else None)
    if isinstance(splits, DataSplits):
        dataset, max_batches = capped(dataset, max_batches, batch_size), None
    if target is not None:
        net.to(target)
    metrics = evaluate_split(net, dataset, task=scorer, batch_size=batch_size, device=target,
                             max_batches=max_batches)
    results = {"command": "eval", "model": model, "data": splits.name, "split": split, "task": scorer.name,
               "weights": weights, "max_batches": max_batches, "metrics": dict(metrics)}
    return finish(results, out_dir)


def _holds(splits: Any, split: str) -> bool:
    """Whether ``splits`` has ``split`` with samples in it (a text file's loaders: has it at all)."""
    found = getattr(splits, split, None)
    return found is not None and (not isinstance(splits, DataSplits) or len(found) > 0)
