"""FPGM: filters near the geometric median of their layer are the most replaceable."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from prunekit.graph.groups import ChannelGroup, Role, tensor_of
from prunekit.importance.aggregate import combine, pick_members
from prunekit.importance.magnitude import member_rows

__all__ = ["fpgm"]


def fpgm(group: ChannelGroup, model: nn.Module, stats: object = None, *,
         roles: Sequence[Role] = ("producer",), aggregate: str = "sum",
         normalize: str | None = None) -> torch.Tensor:
    """Sum of L2 distances from each channel's filter to every other filter of the same member.

    He et al. 2019, "Filter Pruning via Geometric Median for Deep CNN Acceleration": the filter that
    minimises the summed distance to the others (the geometric median's neighbour) is the one the
    rest can best stand in for, so the smallest sum = least important. Scored per weight member
    (tensors with >= 2 dims; biases only when a member set has no weight) and aggregated.
    """
    members = pick_members(group, roles)
    weights = tuple(m for m in members if tensor_of(model, m.tensor).dim() >= 2) or members
    per_member = []
    for member in weights:
        rows = member_rows(member, model, group.size).double()
        per_member.append(torch.cdist(rows, rows).sum(dim=1).float())
    return combine(per_member, aggregate=aggregate, normalize=normalize)
