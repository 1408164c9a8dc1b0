"""Greedy (NetAdapt, Yang et al. 2018): from the dense model, each step shrinks the one dimension
whose cut loses the least proxy metric per unit of cost saved, until the constraints hold.

Each dimension's cut is its smallest step that saves at least the cost still to shed divided by
the evaluations left (NetAdapt's per-step resource reduction, sized to the budget). Every
dimension is scored once; then each step re-scores the dimension whose last ``(metric lost) /
(cost saved)`` was best at the current configuration and takes its cut if it is still the best
(lazy greedy: the other dimensions' ratios are not re-measured every step), so a step costs one or
two proxy evaluations instead of one per dimension. ``random_search`` is the baseline
every strategy is compared with at the same number of proxy evaluations. Widths, blocks and ranks
shrink alike: a rank dimension's cut is a cheaper factorisation of its layer (its choices fall in MACs).
"""

from __future__ import annotations

import random
from typing import Any

from prunekit.search.evaluator import BudgetSpent, Evaluator
from prunekit.search.space import Config

__all__ = ["greedy", "random_search"]


def _cost(evaluator: Evaluator, config: Config) -> float:
    costs = evaluator.costs(config)
    key = next(iter(evaluator.limits), "macs")
    return costs.get(key, costs.get("macs", 0.0))


def _cut(evaluator: Evaluator, config: Config, name: str, need: float) -> Config | None:
    """``config`` with dimension ``name`` one or more choices smaller, saving at least ``need``."""
    dim = evaluator.space.dimension(name)
    at = dim.choices.index(config[name])
    before = _cost(evaluator, config)
    candidate = None
    for choice in dim.choices[at + 1:]:
        candidate = {**config, name: choice}
        if before - _cost(evaluator, candidate) >= need:
            break
    return candidate


def greedy(evaluator: Evaluator, *, seed: int, state: dict[str, Any], save: Any) -> None:
    """NetAdapt-style shrinking (module docstring); ``state`` holds the current configuration and
    each dimension's last measured loss per cost saved."""
    space = evaluator.space
    config = state.get("config") or space.dense()
    target = next(iter(evaluator.limits.values()), 0.0)
    shrinkable = [d.name for d in space.dimensions if d.kind in ("width", "block", "rank")]
    ratios: dict[str, float] = dict(state.get("ratios", {}))
    budget = evaluator.budget or 10 * len(shrinkable)

    def need() -> float:
        # NOTE: about half the lazy re-scorings are taken, so a cut sheds the gap over half the evaluations left
        left = max((budget - evaluator.evaluations) // 2, 1)
        return max((_cost(evaluator, config) - target) / left, 1e-9)

    def ratio(name: str, current: float) -> tuple[float, Config | None]:
        candidate = _cut(evaluator, config, name, need())
        if candidate is None:
            return float("inf"), None
        saved = max(_cost(evaluator, config) - _cost(evaluator, candidate), 1e-12)
        return (current - evaluator.goodness(evaluator(candidate).values)) / saved, candidate

    try:
        current = evaluator.goodness(evaluator(config).values)
        sweep = budget > 2 * len(shrinkable) + 1  # NOTE: a small budget skips the sweep: all start level
        for name in shrinkable:
            if name not in ratios:
                ratios[name] = ratio(name, current)[0] if sweep else 0.0
                state.update(config=config, ratios=ratios)
                save(state)
        while not evaluator.cheap_feasible(config):
            order = sorted((r, i, n) for i, (n, r) in enumerate(ratios.items()) if r != float("inf"))
            if not order:
                break
            name = order[0][2]
            fresh, candidate = ratio(name, current)
            ratios[name] = fresh
            runner_up = order[1][0] if len(order) > 1 else float("inf")
            # NOTE: lazy greedy (stale ratios of others only grow); in the budget's second half every
            # re-scored cut is taken, so the target is reached before the evaluations run out
            if candidate is not None and (fresh <= runner_up or 2 * evaluator.evaluations >= budget):
                config = candidate
                current = evaluator.goodness(evaluator(config).values)
            state.update(config=config, ratios=ratios)
            save(state)
    except BudgetSpent:
        pass


def random_search(evaluator: Evaluator, *, seed: int, state: dict[str, Any], save: Any) -> None:
    """Uniformly random feasible configurations (rejection on the cheap costs), one proxy
    evaluation each; the RNG state is saved after each, so a resumed run continues the same draw."""
    rng = random.Random(seed)
    if "rng" in state:
        rng.setstate((state["rng"][0], tuple(state["rng"][1]), state["rng"][2]))
    limit = 20 * (evaluator.budget or 50)  # NOTE: repeated draws are remembered and cost nothing
    try:
        while state.get("draws", 0) < limit:
            state["draws"] = state.get("draws", 0) + 1
            for _ in range(1000):
                config = evaluator.space.sample(rng)
                if evaluator.cheap_feasible(config):
                    break
            evaluator(config)
            version, internal, gauss = rng.getstate()
            state["rng"] = [version, list(internal), gauss]
            save(state)
    except BudgetSpent:
        pass
