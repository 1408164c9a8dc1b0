"""Activation importance functions: a channel matters as much as the signal it carries on calibration data.

A channel's activation is read where the network passes it on: the input of each consumer module
(after BN, ReLU, pooling — where dead channels show as zeros). Groups with no recorded consumer
(a consumer whose input channels are not its weight's axis, e.g. a grouped conv) fall back to the
outputs of their producer modules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.graph.groups import ChannelGroup, Role, tensor_of
from prunekit.importance.aggregate import combine
from prunekit.importance.stats import require

__all__ = ["activation", "apoz"]


def _per_member(group: ChannelGroup, model: nn.Module, table: Mapping[tuple[str, str], torch.Tensor],
                roles: Sequence[Role]) -> list[torch.Tensor]:
    """Per member with one of ``roles``: the recorded statistic of each group channel, ``Tensor[size]``."""
    found = []
    channels = torch.arange(group.size)
    for member in group.members:
        if member.role not in roles or member.role == "passive":
            continue
        values = table.get((member.module, "output" if member.role == "producer" else "input"))
        if values is None or values.numel() != tensor_of(model, member.tensor).shape[member.axis]:
            continue  # NOTE: e.g. a grouped conv's weight axis 1 is not its input channel axis.
        found.append(values[member.indices(channels)].reshape(group.size, member.inner).mean(1))
    return found


def _channel_stats(group: ChannelGroup, model: nn.Module, table: Mapping[tuple[str, str], torch.Tensor],
                   roles: Sequence[Role], importance: str) -> list[torch.Tensor]:
    found = _per_member(group, model, table, roles) or _per_member(group, model, table, ("producer",))
    if not found:
        raise ConfigError(
            f"{importance}: no activation was recorded for group '{group.id}' (modules "
            f"{', '.join(group.modules)}): its producers and consumers are not conv, linear or embedding "
            f"modules, or the stats were collected for other groups. Use a weight importance such as 'l2'."
        )
    return found


def activation(group: ChannelGroup, model: nn.Module, stats: object = None, *,
               roles: Sequence[Role] = ("consumer",), aggregate: str = "mean",
               normalize: str | None = None) -> torch.Tensor:
    """Mean ``|a|`` of each channel over the calibration batches, averaged over where it is read.

    The activation-magnitude importance (e.g. Polyak & Wolf 2015, "Channel-level acceleration of
    deep face representations"): channels that carry little signal change the output little.
    """
    table = require(stats, "activation").activation_mean
    return combine(_channel_stats(group, model, table, roles, "activation"), aggregate=aggregate,  # type: ignore[arg-type]
                   normalize=normalize)


def apoz(group: ChannelGroup, model: nn.Module, stats: object = None, *,
         roles: Sequence[Role] = ("consumer",), aggregate: str = "mean",
         normalize: str | None = None) -> torch.Tensor:
    """``1 - APoZ``: the fraction of non-zero activations of each channel (higher = keep).

    Hu et al. 2016, "Network Trimming: A Data-Driven Neuron Pruning Approach towards Efficient Deep
    Architectures": a channel that is mostly zero after ReLU (high Average Percentage of Zeros)
    contributes little. Measured before a consumer, so it sees the activation function's output.
    """
    table = require(stats, "apoz").apoz
    zeros = _channel_stats(group, model, table, roles, "apoz")  # type: ignore[arg-type]
    return combine([1.0 - z for z in zeros], aggregate=aggregate, normalize=normalize)
