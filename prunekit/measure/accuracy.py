"""Accuracy and loss of a classifier on a dataset, without changing the model."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import TensorDataset

__all__ = ["Metrics", "evaluate"]


@dataclass(frozen=True)
class Metrics:
    """Mean cross-entropy ``loss``, top-1 ``accuracy`` in [0, 1], over ``count`` samples."""

    loss: float
    accuracy: float
    count: int


@torch.no_grad()
def evaluate(model: nn.Module, dataset: TensorDataset, *, batch_size: int = 512,
             device: torch.device | str | None = None) -> Metrics:
    """Top-1 accuracy and mean loss of ``model`` on ``dataset``; the model's train/eval mode is restored."""
    inputs, labels = dataset.tensors[0], dataset.tensors[1]
    device = torch.device(device) if device is not None else next(
        (p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    try:
        for start in range(0, len(inputs), batch_size):
            x = inputs[start:start + batch_size].to(device)
            y = labels[start:start + batch_size].to(device)
            logits = model(x)
            total_loss += nn.functional.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(dim=1) == y).sum().item()
    finally:
        model.train(was_training)
    n = len(inputs)
    return Metrics(loss=total_loss / max(n, 1), accuracy=correct / max(n, 1), count=n)
