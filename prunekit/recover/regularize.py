"""Sparsity-inducing regularisers added to the training loss (``train`` callbacks).

- :class:`BNScaleL1` — network slimming (Liu et al. 2017): ``lambda * sum |gamma|`` over the
  BatchNorm scales, so unimportant channels' scales shrink and ``bn_scale`` importance finds them.
- :class:`GroupLasso` — ``lambda * sum_groups sum_channels ||w_channel||_2`` where ``w_channel``
  gathers every weight tied to one channel across its whole ChannelGroup (producer rows, consumer
  columns, norm scales), so a channel is driven to zero as a unit — what structural pruning cuts.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.graph.dependency import DependencyGraph
from prunekit.graph.groups import tensor_of

__all__ = ["BNScaleL1", "GroupLasso"]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def _check_strength(name: str, strength: float) -> float:
    if not strength >= 0:
        raise ConfigError(f"{name}: strength must be >= 0; got {strength}. Use e.g. 1e-4.")
    return float(strength)


class BNScaleL1:
    """Adds ``strength * sum |gamma|`` of every affine BatchNorm to the loss."""

    def __init__(self, strength: float = 1e-4) -> None:
        self.strength = _check_strength("BNScaleL1", strength)

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """The un-weighted term ``sum |gamma|``."""
        scales = [m.weight.abs().sum() for m in model.modules() if isinstance(m, _BN) and m.weight is not None]
        if not scales:
            raise ConfigError("BNScaleL1: the model has no affine BatchNorm layer; network slimming needs "
                              "BatchNorm scales. Use GroupLasso instead.")
        return torch.stack(scales).sum()

    def on_loss(self, step: int, model: nn.Module, batch: Any, outputs: Any,
                loss: torch.Tensor) -> torch.Tensor:
        """``loss + strength * sum |gamma|``."""
        return loss + self.strength * self.penalty(model)


class GroupLasso:
    """Adds ``strength * sum over prunable channels of the L2 norm of all their weights``.

    Args:
        graph: the model's :class:`DependencyGraph` (its prunable groups are penalised).
        strength: the weight ``lambda``.
    """

    def __init__(self, graph: DependencyGraph, strength: float = 1e-4) -> None:
        self.graph = graph
        self.strength = _check_strength("GroupLasso", strength)

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """The un-weighted term: the sum of per-channel group norms."""
        total = None
        for group in self.graph.prunable:
            squares = None
            for member in group.members:
                t = tensor_of(model, member.tensor)
                if not t.requires_grad:
                    continue
                rows = t.movedim(member.axis, 0).narrow(0, member.start, group.size * member.inner)
                per = rows.reshape(group.size, -1).square().sum(dim=1)
                squares = per if squares is None else squares + per
            if squares is not None:
                norms = (squares + 1e-12).sqrt().sum()
                total = norms if total is None else total + norms
        if total is None:
            raise ConfigError("GroupLasso: no prunable group has trainable weights; trace the model "
                              "that is being trained, and leave its weights trainable.")
        return total

    def on_loss(self, step: int, model: nn.Module, batch: Any, outputs: Any,
                loss: torch.Tensor) -> torch.Tensor:
        """``loss + strength * penalty``."""
        return loss + self.strength * self.penalty(model)
