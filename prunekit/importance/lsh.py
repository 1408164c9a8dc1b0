"""Redundancy by locality-sensitive hashing: near-duplicate filters land in the same bucket."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.graph.groups import ChannelGroup, Role
from prunekit.importance.aggregate import AGGREGATES, normalize as _normalize, pick_members
from prunekit.importance.magnitude import member_rows

__all__ = ["lsh", "buckets"]


def buckets(filters: torch.Tensor, *, bits: int = 16, seed: int = 0) -> torch.Tensor:
    """SimHash bucket id per row of ``filters`` ``[n, d]`` (Charikar 2002, random hyperplanes).

    Bit ``i`` is ``sign(f · r_i)`` for ``bits`` Gaussian hyperplanes ``r_i`` drawn from a generator
    seeded with ``seed``; two filters at angle θ share a bucket with probability ``(1 - θ/π)^bits``.
    """
    if not 1 <= bits <= 62:
        raise ConfigError(f"lsh: 'bits' must be an int in [1, 62]; got {bits}. 16 is a good default.")
    generator = torch.Generator().manual_seed(seed)
    planes = torch.randn(filters.shape[1], bits, generator=generator, dtype=torch.float64)
    code = (filters.double() @ planes >= 0).long()
    return (code << torch.arange(bits)).sum(dim=1)


def lsh(group: ChannelGroup, model: nn.Module, stats: object = None, *, bits: int = 16, seed: int = 0,
        roles: Sequence[Role] = ("producer",), aggregate: str = "sum",
        normalize: str | None = None) -> torch.Tensor:
    """L2 norm of each channel's filter, with near-duplicates pushed below every kept channel.

    A channel's filter is all its producer values concatenated (weights and biases of every
    producer), so only channels duplicated everywhere share a bucket; ``aggregate`` has no effect.
    In each bucket the channel with the largest norm is kept with score ``‖f_j‖``; every other one
    scores ``0.5 · m · ‖f_j‖ / M`` (``m``: the smallest kept score, ``M``: the largest norm), which
    is below every kept channel and still orders duplicates by norm.
    """
    if aggregate not in AGGREGATES:
        raise ConfigError(f"lsh: 'aggregate' must be one of {sorted(AGGREGATES)}; got {aggregate!r}.")
    filters = torch.cat([member_rows(m, model, group.size) for m in pick_members(group, roles)], dim=1)
    norms = filters.double().norm(dim=1)
    ids = buckets(filters, bits=bits, seed=seed)
    keep = torch.zeros(group.size, dtype=torch.bool)
    for bucket in ids.unique():
        members = (ids == bucket).nonzero().flatten()
        # NOTE: ties go to the lowest index, so the result does not depend on sort stability.
        keep[members[norms[members].argmax()]] = True
    low = 0.5 * norms[keep].min() * norms / norms.max().clamp_min(1e-12)
    return _normalize(torch.where(keep, norms, low).float(), normalize)
