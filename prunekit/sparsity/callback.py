"""Gradual pruning inside :func:`prunekit.recover.train`: a training-loop callback around a Sparsifier.

``train`` calls ``on_step_end(step, model, loss)`` after every optimizer step (``step`` counted over
the whole run) and checkpoints ``state_dict()`` with each epoch, so ``--resume`` continues the
schedule where it stopped. The masks themselves are buffers in the model's ``state_dict``, which the
checkpoint already holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from prunekit.sparsity.sparsifier import Sparsifier

__all__ = ["SparsityCallback"]


class SparsityCallback:
    """Steps a prepared :class:`Sparsifier` once per optimizer step of ``train``.

    Example::

        sparsifier = Sparsifier(0.9, schedule={"name": "gradual", "end": 2000}).prepare(model)
        train(model, data, config, callbacks=[SparsityCallback(sparsifier)])
        sparsifier.finalize()
    """

    def __init__(self, sparsifier: Sparsifier) -> None:
        self.sparsifier = sparsifier

    def on_step_end(self, step: int, model: nn.Module, loss: float) -> None:
        """Move the masks along the schedule (reads gradients before the next ``zero_grad``)."""
        self.sparsifier.step(step)

    def on_epoch_end(self, epoch: int, model: nn.Module, metrics: Mapping[str, Any]) -> None:
        """Nothing: schedules are in optimizer steps. Present so the protocol is complete."""

    def state_dict(self) -> dict[str, Any]:
        """The sparsifier's step and gradient statistics (tensors and numbers only)."""
        return self.sparsifier.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (on a resumed run)."""
        self.sparsifier.load_state_dict(state)
