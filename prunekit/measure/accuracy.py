"""A model's task metric on data, without changing the model.

``evaluate(model, data)`` with no task scores a classifier and returns :class:`Metrics` (mean
cross-entropy, top-1 accuracy, count), as it always has. With ``task=`` it returns that task's
metrics as a dict, e.g. ``{"loss", "perplexity", "count"}`` for ``task="causal_lm"``. ``data`` is a
labelled ``TensorDataset`` (batched here) or any iterable of batches, such as a DataLoader.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, overload

import torch
from torch import nn
from torch.utils.data import TensorDataset

from prunekit.data.loaders import TensorBatches
from prunekit.errors import ConfigError
from prunekit.tasks import Classification, Task, resolve
from prunekit.tasks.batches import device_of

__all__ = ["Metrics", "evaluate"]


@dataclass(frozen=True)
class Metrics:
    """Mean cross-entropy ``loss``, top-1 ``accuracy`` in [0, 1], over ``count`` samples."""

    loss: float
    accuracy: float
    count: int


@overload
def evaluate(model: nn.Module, data: TensorDataset | Iterable[Any], *, task: None = None,
             batch_size: int = 512, device: torch.device | str | None = None,
             max_batches: int | None = None) -> Metrics: ...


@overload
def evaluate(model: nn.Module, data: TensorDataset | Iterable[Any], *, task: Task | str,
             batch_size: int = 512, device: torch.device | str | None = None,
             max_batches: int | None = None) -> dict[str, float]: ...


def evaluate(model: nn.Module, data: TensorDataset | Iterable[Any], *, task: Task | str | None = None,
             batch_size: int = 512, device: torch.device | str | None = None,
             max_batches: int | None = None) -> Metrics | dict[str, float]:
    """Score ``model`` on ``data`` (at most ``max_batches`` batches); its train/eval mode is restored.

    Args:
        data: a ``TensorDataset`` (sliced into batches of ``batch_size``) or an iterable of batches.
        task: a Task or registered task name; None scores classification and returns
            :class:`Metrics`, otherwise the task's metrics dict.
        device: where the model is expected to be (default: wherever it is); batches are moved
            there. The model itself is never moved.
    """
    if device is not None and torch.device(device) != device_of(model):
        wanted, have = torch.device(device), device_of(model)
        if not (wanted.type == have.type and wanted.index in (None, have.index)):
            raise ConfigError(f"evaluate: device={device} but the model is on {have}. Fix: move the "
                              f"model first (model.to('{device}')), or drop device.")
    batches = TensorBatches(data, batch_size) if isinstance(data, TensorDataset) else data
    scorer = resolve(task)
    metrics = scorer.evaluate(model, batches, max_batches=max_batches)
    if task is None and isinstance(scorer, Classification):
        return Metrics(loss=metrics["loss"], accuracy=metrics["accuracy"], count=int(metrics["count"]))
    return metrics
