"""How a rank is chosen: a fixed rank, a fraction of full rank, energy kept, or EVBMF.

A *spectrum* is the singular values of one matrix (a Linear weight, a conv kernel reshaped to
N x C*k*k, or one unfolding of a conv kernel) with the matrix's shape. *Energy kept* at rank r is
sum(s[:r]^2) / sum(s^2): rank by energy 0.9 keeps the fewest components that hold 90 % of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from prunekit.errors import ConfigError

__all__ = ["Spectrum", "RankSpec", "rank_spec", "axis_rank"]


@dataclass(frozen=True)
class Spectrum:
    """Singular values (descending, float64) of a ``rows`` x ``cols`` matrix."""

    values: torch.Tensor
    rows: int
    cols: int

    @property
    def full(self) -> int:
        """The full rank: min(rows, cols)."""
        return min(self.rows, self.cols)


@dataclass(frozen=True)
class RankSpec:
    """One rule for every layer: ``kind`` is fixed | fraction | energy | vbmf, ``value`` its number.

    fixed: an int rank (or an (r_in, r_out) pair for Tucker-2), clipped to full rank;
    fraction: a float in (0, 1], that fraction of each axis's full rank (rounded, at least 1);
    energy: a float in (0, 1], the energy to keep; vbmf: EVBMF's estimate (no value); level: the
    shared knob a MACs ``target`` bisects (see ``Method.level_ranks``).
    """

    kind: Literal["fixed", "fraction", "energy", "vbmf", "level"]
    value: int | float | tuple[int, int] | None = None


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def rank_spec(rank: int | float | tuple[int, int] | str | None, energy: float | None) -> RankSpec:
    """Validate ``rank``/``energy`` (at most one given) into a :class:`RankSpec`; default energy 0.9."""
    if rank is not None and energy is not None:
        raise ConfigError(f"decompose: give either 'rank' or 'energy', not both; got rank={rank!r}, "
                          f"energy={energy!r}. Drop one of them.")
    if energy is not None:
        if isinstance(energy, bool) or not isinstance(energy, (int, float)) or not 0 < energy <= 1:
            raise ConfigError(f"decompose: 'energy' must be a float in (0, 1], the fraction of each "
                              f"layer's squared singular values to keep; got {energy!r}. Pass e.g. 0.9.")
        return RankSpec("energy", float(energy))
    if rank is None:
        return RankSpec("energy", 0.9)
    if isinstance(rank, str):
        if rank.lower() == "vbmf":
            return RankSpec("vbmf")
        raise ConfigError(f"decompose: 'rank' as a string must be 'vbmf'; got {rank!r}. Pass an int "
                          f"rank, a fraction of full rank such as 0.5, or 'vbmf'.")
    if _is_int(rank):
        if rank < 1:
            raise ConfigError(f"decompose: 'rank' must be >= 1; got {rank}. A rank-0 layer would "
                              f"output a constant; pass e.g. rank=8 or a fraction such as 0.5.")
        return RankSpec("fixed", int(rank))
    if isinstance(rank, float):
        if not 0 < rank <= 1:
            raise ConfigError(f"decompose: a float 'rank' is a fraction of full rank in (0, 1]; got "
                              f"{rank}. Pass e.g. 0.5, or an int rank such as 16.")
        return RankSpec("fraction", rank)
    if isinstance(rank, (tuple, list)) and len(rank) == 2 and all(_is_int(r) and r >= 1 for r in rank):
        return RankSpec("fixed", (int(rank[0]), int(rank[1])))
    raise ConfigError(f"decompose: 'rank' must be an int >= 1, a float in (0, 1], an (r_in, r_out) "
                      f"pair of ints or 'vbmf'; got {rank!r}. Pass e.g. rank=16.")


def energy_rank(values: torch.Tensor, energy: float) -> int:
    """Fewest leading components whose squared sum reaches ``energy`` of the total (at least 1)."""
    power = values.double() ** 2
    total = float(power.sum())
    if total <= 0:
        return 1
    kept = torch.cumsum(power, 0) / total
    # NOTE: a tiny tolerance so energy 1.0 is reached despite rounding in the cumulative sum.
    return max(1, int((kept < energy - 1e-12).sum()) + 1)


def axis_rank(spectrum: Spectrum, spec: RankSpec, fixed: int | None = None) -> int:
    """The rank ``spec`` gives one axis with this ``spectrum``; ``fixed`` is this axis's fixed rank."""
    if spec.kind == "fixed":
        return max(1, min(int(fixed if fixed is not None else spec.value), spectrum.full))
    if spec.kind == "fraction":
        return max(1, min(spectrum.full, math.ceil(float(spec.value) * spectrum.full - 1e-9)))
    if spec.kind == "energy":
        return min(energy_rank(spectrum.values, float(spec.value)), spectrum.full)
    from prunekit.decompose.vbmf import evbmf_rank

    return min(evbmf_rank(spectrum.values.cpu().numpy(), spectrum.rows, spectrum.cols), spectrum.full)
