"""Backtracking: depth-first branch and bound over a discrete space, for the best feasible metric.

Dimensions are assigned in order, each trying its choices from the dense one down. A partial
assignment is completed two ways to bound it: every open dimension at its *cheapest* choice (if
even that breaks a constraint, no completion can meet it: prune), and, with ``monotone=True``,
every open dimension at its *dense* choice (more channels never score lower, so that metric bounds
every completion: prune when it cannot beat the best found). Without ``monotone`` only the
feasibility bound prunes and the answer is exactly the brute-force optimum; the tests check both
on spaces small enough to enumerate. Costs (MACs, params, latency) must not fall as choices grow,
which holds for widths, blocks and ranks; cut points are ordered, so the cheapest completion is
checked only for width, block and rank dimensions.
"""

from __future__ import annotations

from typing import Any

from prunekit.search.evaluator import BudgetSpent, Evaluator
from prunekit.search.space import Config

__all__ = ["backtracking"]


def backtracking(evaluator: Evaluator, *, seed: int, state: dict[str, Any], save: Any,
                 monotone: bool = True) -> None:
    """Depth-first branch and bound (module docstring); the best is kept in ``state``.

    Resuming replays the same deterministic walk; evaluations already paid for come from the
    evaluator's memory, so only the unexplored part costs proxy evaluations."""
    space = evaluator.space
    dims = list(space.dimensions)
    # NOTE: the replay starts from no best, as the first walk did: starting from the saved best would
    # prune branches the first walk explored before it found that best, so a resumed search would
    # evaluate other configurations (and may end on another best) than an uninterrupted one
    best: list[float] = [float("-inf")]  # NOTE: as evaluator.goodness (maximised)

    def scored(config: Config) -> float:
        """``config``'s goodness; the state is saved after every paid evaluation, so a search killed
        mid-walk replays it from memory rather than paying for it again."""
        paid = evaluator.evaluations
        value = evaluator.goodness(evaluator(config).values)
        if evaluator.evaluations != paid:
            save(state)
        return value

    def completion(partial: Config, cheapest: bool) -> Config | None:
        config = dict(partial)
        for d in dims[len(partial):]:
            config[d.name] = d.choices[-1] if cheapest and d.kind != "cut" else space.dense()[d.name]
        return config if space.valid(config) or any(d.kind == "cut" for d in dims[len(partial):]) else None

    def visit(partial: Config) -> None:
        depth = len(partial)
        if depth == len(dims):
            if not space.valid(partial) or not evaluator.cheap_feasible(partial):
                return
            value = scored(partial)
            if value > best[0]:
                best[0] = value
                state.update(best_metric=value, best=partial)
                save(state)
            return
        cheap = completion(partial, cheapest=True)
        if cheap is not None and not any(d.kind == "cut" for d in dims) and not evaluator.cheap_feasible(cheap):
            return
        if monotone and depth > 0:
            optimistic = completion(partial, cheapest=False)
            if optimistic is not None and space.valid(optimistic) and scored(optimistic) <= best[0]:
                return
        for choice in dims[depth].choices:
            visit({**partial, dims[depth].name: choice})

    try:
        visit({})
    except BudgetSpent:
        pass
