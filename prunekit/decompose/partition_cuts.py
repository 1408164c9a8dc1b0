"""Where to cut a chain of N costed nodes into K contiguous stages: dynamic programming, exact.

Objective, in two steps:

1. the bottleneck ``M*``: the smallest possible cost of the most expensive stage (a pipeline
   runs at the pace of its slowest stage);
2. among all cuts whose every stage costs at most ``M* * (1 + tolerance)``, the fewest bytes
   crossing the cuts in total; ties go to the smaller bottleneck, then to the earlier cuts.

Both steps are exact dynamic programmes over the fixed order of the nodes, O(K * N^2) with the
inner minimum vectorised. For a graph with branches the order is one topological order of it; a
different topological order could allow other cuts, and no search over orders is made.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from prunekit.errors import ConfigError

__all__ = ["best_cuts", "cut_objective"]


def _check(costs: Sequence[float], cut_bytes: Sequence[float | None], stages: int,
           tolerance: float) -> None:
    count = len(costs)
    if isinstance(stages, bool) or not isinstance(stages, int) or stages < 1:
        raise ConfigError(f"partition: 'stages' must be an integer >= 1; got {stages!r}. "
                          f"Pass the number of pipeline stages, e.g. 2.")
    if stages > count:
        raise ConfigError(f"partition: cannot cut a graph of {count} nodes into {stages} stages "
                          f"(each stage needs at least one node). Pass stages <= {count}.")
    usable = sum(b is not None for b in cut_bytes)
    if stages - 1 > usable:
        raise ConfigError(
            f"partition: {stages} stages need {stages - 1} cuts, but only {usable} of the "
            f"{len(cut_bytes)} positions between nodes are crossed by tensors alone (the others "
            f"pass Python values such as x.size(0)). Pass stages <= {usable + 1}.")
    if len(cut_bytes) != max(count - 1, 0):
        raise ConfigError(f"partition: need {count - 1} cut sizes for {count} nodes; got "
                          f"{len(cut_bytes)}.")
    if not tolerance >= 0 or any(not c >= 0 for c in costs):
        raise ConfigError(f"partition: costs and 'tolerance' must be >= 0; got tolerance "
                          f"{tolerance!r}. Pass e.g. tolerance=0.05 (5% above the best bottleneck).")


def cut_objective(costs: Sequence[float], cut_bytes: Sequence[float | None],
                  cuts: Sequence[int]) -> tuple[float, float]:
    """(bottleneck, total bytes crossing) of the stages that ``cuts`` (positions 1..N-1) make."""
    bounds = [0, *cuts, len(costs)]
    bottleneck = max(sum(costs[a:b]) for a, b in zip(bounds, bounds[1:]))
    crossing = sum(cut_bytes[j - 1] if cut_bytes[j - 1] is not None else math.inf for j in cuts)
    return bottleneck, crossing


def best_cuts(costs: Sequence[float], cut_bytes: Sequence[float | None], stages: int, *,
              tolerance: float = 0.05) -> tuple[int, ...]:
    """The K-1 cut positions (cut j = stage boundary after node j, 1 <= j < N), increasing.

    costs: ``[N]`` cost per node (MACs or milliseconds). cut_bytes: ``[N-1]`` bytes crossing the
    cut after node j, None where no cut is allowed. The objective is in the module docstring.
    """
    _check(costs, cut_bytes, stages, tolerance)
    if stages == 1:
        return ()
    prefix = np.concatenate([[0.0], np.cumsum(np.asarray(costs, dtype=np.float64))])
    allowed = np.array([False, *(b is not None for b in cut_bytes)])
    sizes = np.array([0.0, *(b if b is not None else 0.0 for b in cut_bytes)])
    bottleneck = _min_bottleneck(prefix, allowed, stages)
    # NOTE: a relative slack of 1e-9 keeps float round-off from excluding the optimum itself.
    limit = bottleneck * (1.0 + tolerance) * (1.0 + 1e-9) + 1e-12
    return _fewest_bytes(prefix, allowed, sizes, stages, limit)


def _min_bottleneck(prefix: np.ndarray, allowed: np.ndarray, stages: int) -> float:
    """min over cuts of the costliest stage: f[k][i] = min_j max(f[k-1][j], S[i] - S[j])."""
    count = len(prefix) - 1
    best = prefix.copy()  # one stage holding nodes 1..i
    best[0] = math.inf
    for _ in range(2, stages + 1):
        nxt = np.full(count + 1, math.inf)
        for i in range(2, count + 1):
            j = np.arange(1, i)
            cand = np.maximum(best[j], prefix[i] - prefix[j])
            cand[~allowed[j]] = math.inf
            nxt[i] = cand.min()
        best = nxt
    return float(best[count])


def _fewest_bytes(prefix: np.ndarray, allowed: np.ndarray, sizes: np.ndarray, stages: int,
                  limit: float) -> tuple[int, ...]:
    """Fewest total bytes with every stage <= ``limit``; ties: smaller bottleneck, earlier cuts."""
    count = len(prefix) - 1
    total = np.where(prefix <= limit, 0.0, math.inf)
    total[0] = math.inf
    peak = prefix.copy()
    parents: list[np.ndarray] = []
    for _ in range(2, stages + 1):
        nxt_total, nxt_peak = np.full(count + 1, math.inf), np.full(count + 1, math.inf)
        parent = np.zeros(count + 1, dtype=np.int64)
        for i in range(2, count + 1):
            j = np.arange(1, i)
            stage = prefix[i] - prefix[j]
            cand_total = total[j] + sizes[j]
            cand_total[~allowed[j] | (stage > limit)] = math.inf
            cand_peak = np.maximum(peak[j], stage)
            order = np.lexsort((j, cand_peak, cand_total))  # NOTE: last key is the primary one.
            pick = order[0]
            nxt_total[i], nxt_peak[i], parent[i] = cand_total[pick], cand_peak[pick], j[pick]
        total, peak = nxt_total, nxt_peak
        parents.append(parent)
    cuts, i = [], count
    for parent in reversed(parents):
        i = int(parent[i])
        cuts.append(i)
    return tuple(reversed(cuts))
