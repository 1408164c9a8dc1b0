"""Local search: evolution near the best configurations found so far (the uniform start first).

At a tight budget the good allocations lie close to the uniform one: random configurations of the
same space near ResNet-20's 4x budget lose 3-10 points to it after fine-tuning (benchmarks/RESULTS.md,
"does the proxy rank configurations as fine-tuning does"), so sampling the whole space spends the
evaluations far from where the winners are. Each step takes one of the ``population`` best feasible
configurations evaluated so far, moves a few of its dimensions by one to ``reach`` choices up or
down, shrinks random dimensions until the cheap costs meet the constraints, and fills the widths
back up to the budget (:meth:`~prunekit.search.evaluator.Evaluator.filled`); a configuration already
evaluated is drawn again. Pair it with ``proxy_steps`` (a few fine-tune steps per evaluation): the
proxy then ranks neighbours as fine-tuning does, which BatchNorm re-estimation alone does not.
"""

from __future__ import annotations

import random
from typing import Any

from prunekit.search.evaluator import BudgetSpent, Evaluator, key_of
from prunekit.search.space import Config

__all__ = ["local"]


def _parents(evaluator: Evaluator, population: int) -> list[Config]:
    """The ``population`` best feasible configurations evaluated so far (the latest score of each)."""
    latest = {key_of(r.config): r for r in evaluator.history}
    feasible = sorted((r for r in latest.values() if r.feasible), key=lambda r: -evaluator.goodness(r.values))
    return [r.config for r in feasible[:population]]


def _repaired(evaluator: Evaluator, config: Config, rng: random.Random) -> Config:
    """``config`` shrunk one random choice at a time until the cheap costs meet the constraints,
    then filled back up to the budget."""
    config = dict(config)
    dims = evaluator.space.dimensions
    while not evaluator.cheap_feasible(config):
        shrinkable = [d for d in dims if d.choices.index(config[d.name]) < len(d.choices) - 1]
        if not shrinkable:
            break
        d = rng.choice(shrinkable)
        config[d.name] = d.choices[d.choices.index(config[d.name]) + 1]
    return evaluator.filled(config)


def _neighbour(evaluator: Evaluator, parent: Config, rng: random.Random, moves: int, reach: int) -> Config:
    """``parent`` with 1 to ``moves`` dimensions moved by 1 to ``reach`` choices, repaired."""
    dims = evaluator.space.dimensions
    child = dict(parent)
    for d in rng.sample(dims, min(len(dims), rng.randint(1, moves))):
        at = d.choices.index(child[d.name]) + rng.choice((-1, 1)) * rng.randint(1, reach)
        child[d.name] = d.choices[min(max(at, 0), len(d.choices) - 1)]
    return _repaired(evaluator, child, rng)


def local(evaluator: Evaluator, *, seed: int, state: dict[str, Any], save: Any, population: int = 4,
          moves: int = 4, reach: int = 2) -> None:
    """Evolve neighbours of the best configurations (module docstring) until the budget is spent;
    the RNG state is saved after each evaluation, so a resumed run continues the same draw."""
    rng = random.Random(seed)
    if "rng" in state:
        rng.setstate((state["rng"][0], tuple(state["rng"][1]), state["rng"][2]))
    limit = 20 * (evaluator.budget or 50)  # NOTE: a space too small to hold new neighbours ends the search
    try:
        while state.get("draws", 0) < limit:
            state["draws"] = state.get("draws", 0) + 1
            parents = _parents(evaluator, population)
            # NOTE: where nothing feasible was evaluated yet, the dense configuration shrunk at random
            child = (_neighbour(evaluator, rng.choice(parents), rng, moves, reach) if parents
                     else _repaired(evaluator, evaluator.space.dense(), rng))
            evaluator(child)  # NOTE: a configuration evaluated before is remembered and costs nothing
            version, internal, gauss = rng.getstate()
            state["rng"] = [version, list(internal), gauss]
            save(state)
    except BudgetSpent:
        pass
