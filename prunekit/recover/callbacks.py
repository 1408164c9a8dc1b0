"""The training loop's callback protocol: the hooks ``prunekit.recover.train`` calls, all optional."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import torch
from torch import nn

from prunekit.tasks import Task

__all__ = ["Callback"]


class Callback(Protocol):
    """Hooks into the loop; every method is optional (implement any of them).

    - ``on_train_begin(model, task)``: once, before training (a Distiller takes the task here).
    - ``on_loss(step, model, batch, outputs, loss) -> Tensor``: the loss to optimise;
      distillation and regularisers add their terms. ``batch`` is on the device; ``outputs`` is
      what ``task.outputs`` gives (logits, embeddings), or None when the task does not produce
      them in its loss (then call ``task.outputs(model, batch)`` if needed).
    - ``on_step_end(step, model, loss)``: after each optimizer step (``loss`` a float).
    - ``on_epoch_end(epoch, model, metrics)``: after validation, with that epoch's history dict.
    - ``parameters()``: extra trainable tensors (learnable gates) that join the optimizer.
    - ``state_dict()`` / ``load_state_dict()``: state checkpointed and restored (plain data).

    ``model`` is the user's module (never the DDP wrapper). Under torchrun callbacks run on every
    rank, so a callback that edits weights keeps the ranks in step.
    """

    def on_train_begin(self, model: nn.Module, task: Task) -> None: ...

    def on_loss(self, step: int, model: nn.Module, batch: Any, outputs: torch.Tensor | None,
                loss: torch.Tensor) -> torch.Tensor: ...

    def on_step_end(self, step: int, model: nn.Module, loss: float) -> None: ...

    def on_epoch_end(self, epoch: int, model: nn.Module, metrics: Mapping[str, Any]) -> None: ...

    def parameters(self) -> Iterable[torch.Tensor]: ...
