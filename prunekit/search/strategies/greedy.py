"""Greedy (NetAdapt, Yang et al. 2018): from the dense model, each step shrinks the one dimension
whose cut loses the least proxy metric per unit of cost saved, until the constraints hold.

Each step asks every width (or block) dimension for its smallest cut that saves at least
``1/steps`` of the cost still to shed (NetAdapt's per-step resource reduction), scores those
candidates with successive halving (BatchNorm only, then a few fine-tune steps for the better
half), and keeps the best ``(metric lost) / (cost saved)``. ``random_search`` is the baseline
every strategy is compared with at the same number of proxy evaluations.
"""

from __future__ import annotations

import random
from typing import Any

from prunekit.search.evaluator import BudgetSpent, Evaluator, successive_halving
from prunekit.search.space import Config

__all__ = ["greedy", "random_search"]


def _cost(evaluator: Evaluator, config: Config) -> float:
    costs = evaluator.costs(config)
    key = next(iter(evaluator.constraints), "macs")
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


def greedy(evaluator: Evaluator, *, seed: int, state: dict[str, Any], save: Any, steps: int | None = None,
           finetune_steps: int = 4) -> None:
    """NetAdapt-style shrinking (module docstring); ``state`` holds the current configuration.
    ``steps`` None fits the steps to the budget (each step scores every dimension once)."""
    space = evaluator.space
    config = state.get("config") or space.dense()
    target = next(iter(evaluator.constraints.values()), 0.0)
    shrinkable = [d.name for d in space.dimensions if d.kind in ("width", "block")]
    if steps is None:
        per_step = len(shrinkable) + (len(shrinkable) // 2 + 1 if finetune_steps > 0 else 0)
        steps = max(1, min(8, (evaluator.budget or 8 * per_step) // max(per_step, 1)))
    try:
        current = evaluator(config).values["metric"]
        while not evaluator.cheap_feasible(config):
            need = max((_cost(evaluator, config) - target) / max(steps - state.get("step", 0), 1), 1e-9)
            candidates = [c for n in shrinkable if (c := _cut(evaluator, config, n, need)) is not None]
            if not candidates:
                break
            rungs = (0, finetune_steps) if finetune_steps > 0 else (0,)
            ranked = successive_halving(evaluator, candidates, rungs=rungs)
            base = evaluator(config, ranked[0].fidelity).values["metric"] if rungs[-1] else current
            saved = {id(r): max(_cost(evaluator, config) - _cost(evaluator, r.config), 1e-12) for r in ranked}
            best = min(ranked, key=lambda r: ((base - r.values["metric"]) / saved[id(r)], ranked.index(r)))
            config, current = best.config, best.values["metric"]
            state.update(config=config, step=state.get("step", 0) + 1)
            save(state)
    except BudgetSpent:
        pass


def random_search(evaluator: Evaluator, *, seed: int, state: dict[str, Any], save: Any) -> None:
    """Uniformly random feasible configurations (rejection on the cheap costs), one proxy
    evaluation each; the RNG state is saved after each, so a resumed run continues the same draw."""
    rng = random.Random(seed)
    if "rng" in state:
        rng.setstate((state["rng"][0], tuple(state["rng"][1]), state["rng"][2]))
    try:
        while True:
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
