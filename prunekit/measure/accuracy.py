"""A model's task metrics on data, without changing the model.

``evaluate(model, data)`` scores a classifier (mean cross-entropy ``loss``, top-1 ``accuracy``,
``top5``, ``count``); ``task=`` scores any task instead, e.g. ``{"loss", "perplexity", "count"}``
for ``task="causal_lm"``. ``data`` is a labelled ``TensorDataset`` (batched here) or any iterable
of batches, such as a DataLoader. The result is a :class:`Metrics`: a dict whose keys also read as
attributes (``metrics.accuracy``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from prunekit.data.loaders import TensorBatches
from prunekit.errors import ConfigError
from prunekit.tasks import Metrics, Task, resolve
from prunekit.tasks.batches import device_of

__all__ = ["Metrics", "evaluate"]


def evaluate(model: nn.Module, data: TensorDataset | Iterable[Any], *, task: Task | str | None = None,
             batch_size: int = 512, device: torch.device | str | None = None,
             max_batches: int | None = None) -> Metrics:
    """Score ``model`` on ``data`` (at most ``max_batches`` batches); its train/eval mode is restored.

    Args:
        data: a ``TensorDataset`` (sliced into batches of ``batch_size``) or an iterable of batches.
        task: a Task or registered task name; None scores classification.
        device: where the model is expected to be (default: wherever it is); batches are moved
            there. The model itself is never moved.
    """
    if device is not None:
        wanted, have = torch.device(device), device_of(model)
        if not (wanted.type == have.type and wanted.index in (None, have.index)):
            raise ConfigError(f"evaluate: device={device} but the model is on {have}. Fix: move the "
                              f"model first (model.to('{device}')), or drop device.")
    batches = TensorBatches(data, batch_size) if isinstance(data, TensorDataset) else data
    return Metrics(resolve(task).evaluate(model, batches, max_batches=max_batches))
