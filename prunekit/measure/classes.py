"""Which classes a classifier gets right: its confusion matrix on labelled data, and per-class accuracy.

The report compares these before and after pruning to show which classes paid for it. The
model's train/eval mode is restored and the model is not changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from prunekit._modes import modes_of, restore_modes
from prunekit.data.loaders import TensorBatches
from prunekit.errors import ConfigError
from prunekit.tasks.batches import device_of

__all__ = ["confusion_matrix", "per_class_accuracy"]


def confusion_matrix(model: nn.Module, data: TensorDataset | Iterable[Any], num_classes: int, *,
                     batch_size: int = 512, max_batches: int | None = None) -> list[list[int]]:
    """``counts[true][predicted]`` of ``model``'s top-1 predictions on ``(inputs, labels)`` batches
    (a TensorDataset is sliced into ``batch_size`` batches; at most ``max_batches`` are scored)."""
    if num_classes < 1:
        raise ConfigError(f"confusion_matrix: num_classes must be >= 1; got {num_classes}.")
    batches = TensorBatches(data, batch_size) if isinstance(data, TensorDataset) else data
    counts = torch.zeros(num_classes, num_classes, dtype=torch.long)
    device, modes = device_of(model), modes_of(model)
    model.eval()
    try:
        with torch.no_grad():
            for i, batch in enumerate(batches):
                if max_batches is not None and i >= max_batches:
                    break
                inputs, labels = batch[0].to(device), batch[1].long().cpu()
                predicted = model(inputs).argmax(-1).cpu()
                if int(labels.max()) >= num_classes or int(predicted.max()) >= num_classes:
                    raise ConfigError(f"confusion_matrix: a label or prediction is >= num_classes="
                                      f"{num_classes}. Pass the model's class count.")
                counts += torch.bincount(labels * num_classes + predicted,
                                         minlength=num_classes ** 2).reshape(num_classes, num_classes)
    finally:
        restore_modes(modes)
    return counts.tolist()


def per_class_accuracy(counts: Sequence[Sequence[int]]) -> list[float | None]:
    """Recall of each class (correct / samples of that class) from a confusion matrix; None for a
    class with no samples."""
    return [row[i] / total if (total := sum(row)) else None for i, row in enumerate(counts)]
