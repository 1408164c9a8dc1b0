"""Train/eval modes put back exactly: ``model.train(was_training)`` after an eval-mode pass would set
every submodule to the model's own mode, switching one the user had frozen (a BatchNorm kept in eval
while the rest trains) into training."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["Modes", "eval_mode", "modes_of", "restore_modes"]

Modes = list[tuple[nn.Module, bool]]


def modes_of(model: nn.Module) -> Modes:
    """Every module's own train/eval flag, to put back with :func:`restore_modes`."""
    return [(module, module.training) for module in model.modules()]


def restore_modes(modes: Modes) -> None:
    """Each module's flag as :func:`modes_of` found it."""
    for module, training in modes:
        module.training = training


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode within the block; afterwards every module's own flag as it was."""
    modes = modes_of(model)
    model.eval()
    try:
        yield
    finally:
        restore_modes(modes)
