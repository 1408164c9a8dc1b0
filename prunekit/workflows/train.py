"""Training as a workflow: the ``train`` command, and the fine-tuning every other workflow shares.

:func:`fine_tune` is the one place a workflow or a recipe stage trains a model: it runs
:func:`prunekit.recover.fit` on ``device`` and hands the model back on the CPU, where pruning,
profiling and saving happen.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.config import parse_config
from prunekit.recover import TrainConfig, TrainResult
from prunekit.recover import train as train_loop
from prunekit.workflows.common import (
    Measure,
    build,
    capped_splits,
    check_device,
    check_split,
    eval_data,
    example_of,
    finish,
    is_rank_zero,
    measure_profile,
    save_result,
    task_of,
    with_teacher,
)

__all__ = ["fine_tune", "history", "train", "train_baseline", "with_epochs"]


def with_epochs(config: TrainConfig, epochs: int) -> TrainConfig:
    """``config`` with another epoch count (baseline, fine-tune and between-step runs share the rest)."""
    return parse_config(TrainConfig, {**config.model_dump(), "epochs": epochs})


def fine_tune(net: nn.Module, splits: Any, config: TrainConfig, *, progress: bool = False,
              callbacks: Sequence[Any] = (), device: str | torch.device | None = None,
              out_dir: str | os.PathLike[str] | None = None, resume: bool = False,
              task: Any = None) -> TrainResult:
    """Train ``net`` in place on ``splits`` (DataSplits or Loaders) for ``task`` with ``config`` on
    ``device``; ``net`` ends on the CPU when it was moved off it. Image or array data needs samples in
    its train and val splits (every epoch is scored on val); an empty test split is skipped."""
    target = check_device(device)
    for split in ("train", "val"):
        check_split(splits, split, getattr(splits, "name", "data"), "training")
    try:
        return train_loop(net, splits, config, out_dir=out_dir, resume=resume, progress=progress,
                          callbacks=callbacks, device=target, task=task_of(splits, task))
    finally:
        if target is not None and target.type != "cpu":
            net.to("cpu")


def history(result: TrainResult) -> dict[str, Any]:
    """The results.json entry of a fine-tuning run: per-epoch history and wall time."""
    return {"history": list(result.history), "wall_time_s": result.wall_time_s}


def train_baseline(net: nn.Module, splits: Any, config: TrainConfig, epochs: int, *,
                   trained: bool, progress: bool, device: str | torch.device | None = None,
                   task: Any = None) -> dict[str, Any] | None:
    """Train ``epochs`` of baseline unless the model starts ``trained``; the results.json entry, or None."""
    if trained or epochs <= 0:
        return None
    return history(fine_tune(net, splits, with_epochs(config, epochs), progress=progress, device=device,
                             task=task))


def train(model: str, data: str = "fashion_mnist", config: TrainConfig | None = None, *,
          data_dir: str | None = None, tokenizer: str | None = None, block_size: int | None = None,
          image_size: int | tuple[int, int] | None = None,
          weights: str | None = None,
          out_dir: str | os.PathLike[str] | None = None, resume: bool = False, progress: bool = False,
          profile_after: bool = True, measure: Measure | None = None,
          device: str | torch.device | None = None, task: str | None = None) -> dict[str, Any]:
    """Train ``model`` on ``data`` (baseline or fine-tune from ``weights``), then profile it.

    Returns the results dict: config, per-epoch history, validation/test metrics, wall time and
    (when ``profile_after``) the trained model's :class:`~prunekit.measure.Profile` under
    ``"profile"``. ``measure.max_eval_batches`` caps validation, test and profile evaluation.
    """
    config = config or TrainConfig(epochs=1)
    measure = measure or Measure()
    check_device(device)
    net, splits = build(model, data, data_dir=data_dir, weights=weights, task=task, seed=config.seed,
                         tokenizer=tokenizer, block_size=block_size, image_size=image_size)
    splits, scorer = capped_splits(splits, measure), with_teacher(task_of(splits, task), net, model)
    result = fine_tune(net, splits, config, out_dir=out_dir, resume=resume, progress=progress,
                       device=device, task=scorer)
    results: dict[str, Any] = {
        "command": "train", "model": model, "data": splits.name, "task": scorer.name,
        "config": config.model_dump(), "train": {
            "history": list(result.history),
            "val": dict(result.val) if result.val is not None else None,
            "test": dict(result.test) if result.test is not None else None,
            "epochs_run": result.epochs_run, "wall_time_s": result.wall_time_s,
        },
    }
    if out_dir is not None and is_rank_zero():
        results["weights"] = str(Path(out_dir) / "model.safetensors")
        results["files"] = save_result(net, out_dir, model, splits=splits, task=scorer.name,
                                       metrics={k: results["train"][k] for k in ("val", "test")})
    if profile_after and is_rank_zero():
        prof = measure_profile(net, example_of(splits, scorer), model, measure, eval_data(splits), scorer)
        results["profile"] = prof.to_dict()
    return finish(results, out_dir)
