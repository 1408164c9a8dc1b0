"""Parameter counts: every parameter tensor counted once, however many modules share it."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from prunekit.errors import ConfigError

__all__ = ["count_params", "count_nonzero"]


def _unique_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    # NOTE: `named_parameters()` yields a Parameter object once, however many modules hold it.
    for name, param in model.named_parameters():
        if isinstance(param, nn.parameter.UninitializedParameter):
            raise ConfigError(
                f"Parameter '{name}' of {type(model).__name__} is not initialised yet (a lazy "
                f"module). Run one forward pass on an example input before counting.")
        yield param


def count_params(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameter elements in ``model``; a shared (tied) parameter is counted once."""
    return sum(p.numel() for p in _unique_parameters(model)
               if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_nonzero(model: nn.Module) -> int:
    """Number of non-zero parameter elements (shared ones once): params minus what sparsity removed."""
    return sum(int(torch.count_nonzero(p)) for p in _unique_parameters(model))
