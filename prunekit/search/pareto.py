"""Pareto fronts: the non-dominated points over several objectives, and the knee among them.

Each point is a mapping of objective name to value; ``directions`` says per objective whether
higher (``"max"``, the metric) or lower (``"min"``: MACs, latency, size) is better. A point
dominates another when it is at least as good in every objective and better in one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

__all__ = ["dominates", "non_dominated", "knee"]


def _better(direction: str) -> float:
    return 1.0 if direction == "max" else -1.0


def dominates(a: Mapping[str, float], b: Mapping[str, float], directions: Mapping[str, str]) -> bool:
    """True when ``a`` is at least as good as ``b`` everywhere and strictly better somewhere."""
    diffs = [_better(d) * (a[k] - b[k]) for k, d in directions.items()]
    return all(x >= 0 for x in diffs) and any(x > 0 for x in diffs)


def non_dominated(points: Sequence[Mapping[str, float]], directions: Mapping[str, str]) -> list[int]:
    """Indices of the points no other point dominates (duplicates: the first one), in input order."""
    front: list[int] = []
    for i, p in enumerate(points):
        if any(dominates(q, p, directions) for j, q in enumerate(points) if j != i):
            continue
        if any(all(points[j][k] == p[k] for k in directions) for j in front):
            continue
        front.append(i)
    return front


def knee(points: Sequence[Mapping[str, float]], directions: Mapping[str, str]) -> int:
    """Index of the point closest to the ideal one (every objective at its best) once each
    objective is scaled to [0, 1] over ``points``: the balanced trade-off. Raises on no points."""
    if not points:
        raise ValueError("knee: no points to choose from")
    lo = {k: min(p[k] for p in points) for k in directions}
    hi = {k: max(p[k] for p in points) for k in directions}

    def gap(p: Mapping[str, float]) -> float:
        total = 0.0
        for k, d in directions.items():
            span = hi[k] - lo[k]
            scaled = 0.0 if span == 0 else (p[k] - lo[k]) / span
            total += (1.0 - scaled if d == "max" else scaled) ** 2
        return math.sqrt(total)

    return min(range(len(points)), key=lambda i: (gap(points[i]), i))
