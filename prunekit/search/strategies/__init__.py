"""Search strategies: each takes an :class:`~prunekit.search.evaluator.Evaluator` (its budget of
proxy evaluations set), a seed and a JSON-able state (for resuming), and evaluates configurations
until the budget is spent or it is done; the evaluator's history is the result.

``greedy`` (NetAdapt), ``backtracking`` (branch and bound), ``nsga2``, ``tpe``, ``gp`` (Optuna),
``rl`` (AMC-style REINFORCE), ``gates`` (differentiable, via :mod:`prunekit.gates`), ``local``
(evolution near the best found, the uniform start first), ``random``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["STRATEGIES", "strategy"]

State = dict[str, Any]
Save = Callable[[State], None]


def strategy(name: str) -> Callable[..., None]:
    """The function running strategy ``name`` (imported on use: Optuna only when asked for)."""
    from prunekit.errors import ConfigError, did_you_mean

    if name not in STRATEGIES:
        raise ConfigError(f"Unknown search strategy '{name}'.{did_you_mean(name, STRATEGIES)} "
                          f"Choose one of {', '.join(STRATEGIES)}.")
    module, _, function = STRATEGIES[name].rpartition(".")
    import importlib

    return getattr(importlib.import_module(module), function)  # type: ignore[no-any-return]


STRATEGIES = {
    "greedy": "prunekit.search.strategies.greedy.greedy",
    "backtracking": "prunekit.search.strategies.backtracking.backtracking",
    "nsga2": "prunekit.search.strategies.optuna_samplers.nsga2",
    "tpe": "prunekit.search.strategies.optuna_samplers.tpe",
    "gp": "prunekit.search.strategies.optuna_samplers.gp",
    "rl": "prunekit.search.strategies.rl.reinforce",
    "gates": "prunekit.search.strategies.gates.gates",
    "local": "prunekit.search.strategies.local.local",
    "random": "prunekit.search.strategies.greedy.random_search",
}
