"""Turn per-member channel scores into one score per channel, and put groups on a common scale.

Every importance first scores each member (one tensor slice) of a group, giving ``[members, size]``;
``aggregate`` reduces over members, ``normalize`` rescales the group's ``Tensor[size]`` so that scores
of different groups can be compared when allocating globally.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from prunekit.errors import ConfigError, did_you_mean
from prunekit.graph.groups import ChannelGroup, Member, Role

__all__ = ["AGGREGATES", "NORMALIZERS", "aggregate", "combine", "normalize", "pick_members"]

_EPS = 1e-12

AGGREGATES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sum": lambda s: s.sum(0),
    "mean": lambda s: s.mean(0),
    "max": lambda s: s.amax(0),
}

NORMALIZERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mean": lambda s: s / (s.mean() + _EPS),
    "max": lambda s: s / (s.amax() + _EPS),
    "sum": lambda s: s / (s.sum() + _EPS),
    "standardize": lambda s: (s - s.mean()) / (s.std(unbiased=False) + _EPS),
}


def _lookup(table: dict[str, Callable[[torch.Tensor], torch.Tensor]], what: str, name: str
            ) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in table:
        raise ConfigError(
            f"importance: '{what}' must be one of {sorted(table)}; got {name!r}."
            f"{did_you_mean(str(name), table)} Pass e.g. {what}='{next(iter(table))}'."
        )
    return table[name]


def aggregate(per_member: Sequence[torch.Tensor], how: str = "sum") -> torch.Tensor:
    """Reduce per-member scores (each ``Tensor[size]``) over members: ``sum``, ``mean`` or ``max``."""
    reduce = _lookup(AGGREGATES, "aggregate", how)
    if not per_member:
        raise ConfigError("importance: no member of the group could be scored; nothing to aggregate.")
    return reduce(torch.stack([s.float() for s in per_member]))


def normalize(scores: torch.Tensor, how: str | None = None) -> torch.Tensor:
    """Rescale one group's ``Tensor[size]``: ``None`` (as is), ``mean``, ``max``, ``sum`` or ``standardize``.

    Dividing by the group's mean (Torch-Pruning's default) makes groups of different widths and
    weight scales comparable in a global ranking; ``standardize`` gives zero mean, unit variance.
    """
    return scores if how is None else _lookup(NORMALIZERS, "normalize", how)(scores)


def combine(per_member: Sequence[torch.Tensor], **options: str | None) -> torch.Tensor:
    """``normalize(aggregate(per_member))`` with the importance's ``aggregate=`` and ``normalize=``
    options (defaults ``"sum"`` and ``None``): the last step of every importance."""
    reduced = aggregate(per_member, options.get("aggregate") or "sum")
    return normalize(reduced, options.get("normalize"))


def pick_members(group: ChannelGroup, roles: Sequence[Role]) -> tuple[Member, ...]:
    """Members with one of ``roles``; every member when none has them (e.g. a group written only by
    a parameter used directly), so an importance always has something to score."""
    chosen = tuple(m for m in group.members if m.role in roles)
    return chosen or group.members
