"""BatchNorm scale importance (network slimming): a channel matters as much as its BN gamma."""

from __future__ import annotations

import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.graph.groups import ChannelGroup, Member, tensor_of
from prunekit.importance.aggregate import combine

__all__ = ["bn_scale", "bn_members"]


def bn_members(group: ChannelGroup, model: nn.Module) -> tuple[Member, ...]:
    """The group's BatchNorm weights (gamma): passive ``*.weight`` members of a ``_BatchNorm`` module."""
    return tuple(
        m for m in group.members
        if m.role == "passive" and m.tensor.endswith(".weight")
        and isinstance(model.get_submodule(m.module), nn.modules.batchnorm._BatchNorm)
    )


def bn_scale(group: ChannelGroup, model: nn.Module, stats: object = None, *, fallback: str | None = "l1",
             aggregate: str = "sum", normalize: str | None = None) -> torch.Tensor:
    """``|gamma|`` of every BatchNorm on the group, aggregated over BNs (residual groups have several).

    Liu et al. 2017, "Learning Efficient Convolutional Networks through Network Slimming": BN's
    gamma scales each channel, so a small ``|gamma|`` marks a channel the network barely uses.

    Args:
        fallback: importance used for groups with no BatchNorm (default ``"l1"``, so any model can be
            scored, e.g. MLP hidden layers); ``None`` raises ConfigError instead. Weight norms and
            ``|gamma|`` are on different scales: with ``scope="global"`` pass ``normalize="mean"``.
    """
    members = bn_members(group, model)
    if not members:
        if fallback is None:
            raise ConfigError(
                f"bn_scale: group '{group.id}' (modules {', '.join(group.modules)}) has no BatchNorm, so "
                f"it has no gamma to rank by, and fallback=None. Pass fallback='l1' (best with "
                f"normalize='mean'), choose another importance, or leave those modules out with ignore=[...]."
            )
        from prunekit.importance import IMPORTANCE

        return IMPORTANCE.get(fallback).factory(group, model, stats, aggregate=aggregate, normalize=normalize)
    size = torch.arange(group.size)
    per_member = [tensor_of(model, m.tensor).detach()[m.indices(size)].reshape(group.size, -1).abs().mean(1)
                  for m in members]
    return combine(per_member, aggregate=aggregate, normalize=normalize)
