"""An optional TensorBoard log of the training loop (``TrainConfig.tensorboard``), as a callback.

Each call of :func:`prunekit.recover.train` writes a new ``run-N`` subfolder, so a baseline and its
fine-tuning show as two runs; the loss of every step and every number of each epoch's history row
(train/val loss and metrics, lr) are logged with ``torch.utils.tensorboard``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["TensorBoardLog"]


def _next_run(root: Path) -> Path:
    taken = {p.name for p in root.iterdir()} if root.is_dir() else set()
    return root / next(f"run-{n}" for n in range(1, len(taken) + 2) if f"run-{n}" not in taken)


class TensorBoardLog:
    """A training callback writing a TensorBoard event file under ``root/run-N``; :meth:`close` it."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.folder = _next_run(Path(root))
        self.writer = SummaryWriter(log_dir=str(self.folder))

    def on_step_end(self, step: int, model: nn.Module, loss: float) -> None:
        self.writer.add_scalar("step/train_loss", loss, step)

    def on_epoch_end(self, epoch: int, model: nn.Module, metrics: Mapping[str, Any]) -> None:
        for name, value in metrics.items():
            if name != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"epoch/{name}", value, epoch + 1)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()
