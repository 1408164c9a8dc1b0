"""Magnitude criteria: a channel matters as much as the weights that write and read it.

Each criterion is a pure function ``(group, model, stats=None) -> Tensor[size]``: same inputs, same
scores, and the model is never changed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from prunekit.graph.groups import ChannelGroup, Member, Role, tensor_of

__all__ = ["l1", "l2", "member_rows", "random"]

_DEFAULT_ROLES: tuple[Role, ...] = ("producer", "consumer")


def member_rows(member: Member, model: nn.Module, size: int) -> torch.Tensor:
    """The member's tensor as ``[size, -1]``: row ``j`` holds every value tied to channel ``j``."""
    t = tensor_of(model, member.tensor).detach().movedim(member.axis, 0)
    idx = member.indices(torch.arange(size))
    return t[idx].reshape(size, -1).float()


def _aggregate(group: ChannelGroup, model: nn.Module, power: int, roles: Sequence[Role]) -> torch.Tensor:
    score = torch.zeros(group.size)
    for member in group.members:
        if member.role in roles:
            score += member_rows(member, model, group.size).abs().pow(power).sum(dim=1)
    return score


def l1(group: ChannelGroup, model: nn.Module, stats: object = None, *,
       roles: Sequence[Role] = _DEFAULT_ROLES) -> torch.Tensor:
    """Sum of |w| over every weight that writes (producer) or reads (consumer) each channel
    (Li et al. 2017, "Pruning Filters for Efficient ConvNets", extended to the whole group)."""
    return _aggregate(group, model, 1, roles)


def l2(group: ChannelGroup, model: nn.Module, stats: object = None, *,
       roles: Sequence[Role] = _DEFAULT_ROLES) -> torch.Tensor:
    """L2 norm of all weights tied to each channel across the group (DepGraph's group norm)."""
    return _aggregate(group, model, 2, roles).sqrt()


def random(group: ChannelGroup, model: nn.Module, stats: object = None, *, seed: int = 0) -> torch.Tensor:
    """Uniform random scores, seeded per group (a baseline every criterion should beat)."""
    digest = sum((i + 1) * ord(c) for i, c in enumerate(group.id))
    generator = torch.Generator().manual_seed(seed * 1_000_003 + digest)
    return torch.rand(group.size, generator=generator)
