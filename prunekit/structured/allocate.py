"""Turn per-channel scores into a Plan: how many channels each group keeps, and which.

``ratio`` is always the fraction of channels *removed*. ``scope="local"`` removes that fraction
from every prunable group; ``scope="global"`` ranks all channels together (scores normalised per
group by their mean) and removes the lowest ``ratio`` of them, at most ``max_ratio`` of any group.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch

from prunekit.errors import ConfigError
from prunekit.graph.dependency import DependencyGraph
from prunekit.structured.plan import Plan

__all__ = ["allocate"]


def _check(ratio: float, round_to: int, min_keep: int, max_ratio: float) -> None:
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"ratio must be a float in [0, 1); got {ratio}. Pass the fraction of "
                          f"channels to remove, e.g. 0.5.")
    if round_to < 1 or min_keep < 1:
        raise ConfigError(f"round_to and min_keep must be >= 1; got round_to={round_to}, "
                          f"min_keep={min_keep}.")
    if not 0.0 < max_ratio <= 1.0:
        raise ConfigError(f"max_ratio must be in (0, 1]; got {max_ratio}.")


def _n_keep(size: int, removed: int, round_to: int, min_keep: int) -> int:
    keep = max(size - removed, min_keep, 1)
    keep = min(size, math.ceil(keep / round_to) * round_to)  # round up: never below the target width
    return keep


def _top(scores: torch.Tensor, k: int) -> tuple[int, ...]:
    # NOTE: a stable sort makes ties deterministic (lower index wins).
    order = torch.sort(scores, descending=True, stable=True).indices[:k]
    return tuple(sorted(order.tolist()))


def allocate(graph: DependencyGraph, scores: Mapping[str, torch.Tensor], ratio: float, *,
             scope: Literal["local", "global"] = "local", round_to: int = 1, min_keep: int = 1,
             max_ratio: float = 0.9, meta: Mapping[str, Any] | None = None) -> Plan:
    """A Plan keeping the highest-scoring channels of every prunable group.

    Args:
        graph: the traced model's groups; only ``graph.prunable`` groups are cut.
        scores: group id -> ``Tensor[size]`` (higher = more important).
        ratio: fraction of channels to remove, in [0, 1).
        scope: ``local`` (same ratio per group) or ``global`` (one ranking for all groups).
        round_to: kept widths are rounded up to a multiple of this (e.g. 8 for hardware).
        min_keep: no group keeps fewer channels.
        max_ratio: no group loses more than this fraction (global scope).
    """
    _check(ratio, round_to, min_keep, max_ratio)
    if scope not in ("local", "global"):
        raise ConfigError(f"scope must be 'local' or 'global'; got '{scope}'.")
    groups = [g for g in graph.prunable if g.id in scores]
    removed = {g.id: math.floor(g.size * ratio) for g in groups}
    if scope == "global" and groups:
        removed = _global_counts(groups, scores, ratio, max_ratio)
    keep = {g.id: _top(scores[g.id], _n_keep(g.size, removed[g.id], round_to, min_keep)) for g in groups}
    info = {"ratio": ratio, "scope": scope, "round_to": round_to, "min_keep": min_keep, **(meta or {})}
    return Plan(keep=keep, sizes={g.id: g.size for g in groups}, meta=info)


def _global_counts(groups: list, scores: Mapping[str, torch.Tensor], ratio: float,
                   max_ratio: float) -> dict[str, int]:
    """How many channels each group loses when all channels are ranked together."""
    normalised = [scores[g.id].float() / scores[g.id].float().mean().clamp_min(1e-12) for g in groups]
    owners = torch.cat([torch.full((g.size,), i) for i, g in enumerate(groups)])
    flat = torch.cat(normalised)
    budget = math.floor(flat.numel() * ratio)
    counts = [0] * len(groups)
    caps = [math.floor(g.size * max_ratio) for g in groups]
    for index in torch.sort(flat, stable=True).indices.tolist():
        if budget == 0:
            break
        owner = int(owners[index])
        if counts[owner] < min(caps[owner], groups[owner].size - 1):
            counts[owner] += 1
            budget -= 1
    return {g.id: counts[i] for i, g in enumerate(groups)}
