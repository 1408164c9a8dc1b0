"""First-order Taylor importance: how much the loss would change if a channel were zeroed."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.graph.groups import ChannelGroup, Role
from prunekit.importance.aggregate import combine, pick_members
from prunekit.importance.magnitude import rows_of
from prunekit.importance.stats import require

__all__ = ["taylor"]


def taylor(group: ChannelGroup, model: nn.Module, stats: object = None, *,
           roles: Sequence[Role] = ("producer", "consumer"), aggregate: str = "sum",
           normalize: str | None = None) -> torch.Tensor:
    """``|Σ w·∂L/∂w|`` over each member's slice of a channel, aggregated over members.

    Molchanov et al. 2019, "Importance Estimation for Neural Network Pruning": zeroing the slice
    changes the loss by about ``-Σ w·g`` (first-order Taylor), so its magnitude is the importance.
    ``g`` is the gradient averaged over the calibration batches (``Stats.weight_grad``).
    """
    stats = require(stats, "taylor")
    per_member = []
    for member in pick_members(group, roles):
        if member.tensor not in stats.weight_grad:
            continue  # NOTE: buffers (BN running stats) have no gradient.
        rows = rows_of(member, stats.weight_grad[member.tensor], group.size)
        per_member.append(rows.sum(dim=1).abs())
    if not per_member:
        raise ConfigError(
            f"taylor: no gradient was collected for group '{group.id}'. Collect the stats for the "
            f"groups you score: stats=collect(model, batches, graph.prunable)."
        )
    return combine(per_member, aggregate=aggregate, normalize=normalize)
