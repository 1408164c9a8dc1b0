"""A metric where lower is better (a loss, MSE, perplexity) is minimised by every strategy: searching
``-f`` with ``higher_is_better=False`` visits and keeps exactly what searching ``f`` does, the front
and the knee point the same way, and pareto.json, the report and the command say which way is better."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from _models import Residual

from prunekit.graph import DependencyGraph
from prunekit.search.cost import Cost
from prunekit.search.evaluator import Evaluator
from prunekit.search.search import search
from prunekit.search.space import SearchSpace


def _evaluator(metric_of: Any, higher_is_better: bool) -> Evaluator:
    torch.manual_seed(0)
    model, x = Residual().eval(), torch.randn(1, 3, 8, 8)
    graph = DependencyGraph.trace(model, x)
    space = SearchSpace.from_graph(graph, levels=(1.0, 0.75, 0.5, 0.25))
    return Evaluator(space, {}, model=model, graph=graph, cost=Cost(model, graph, space, x), metric_of=metric_of,
                     higher_is_better=higher_is_better)


def _accuracy(config: dict[str, Any]) -> float:
    """Higher with wider groups, unevenly (so allocations differ), and not monotone in one of them."""
    return sum(math.log(v) * (i + 1) for i, v in enumerate(config.values()) if isinstance(v, int)) \
        - 0.3 * math.sin(sum(v for v in config.values() if isinstance(v, int)))


@pytest.mark.parametrize("strategy", ["greedy", "random", "local", "backtracking", "rl", "tpe", "nsga2"])
def test_minimising_a_loss_keeps_what_maximising_its_negation_keeps(strategy: str) -> None:
    runs = []
    for sign, higher in ((1.0, True), (-1.0, False)):
        evaluator = _evaluator(lambda c, sign=sign: sign * _accuracy(c), higher)
        result = search(evaluator.space, ["metric", "macs"], {"macs": 0.5}, strategy, 12, seed=0,
                        evaluator=evaluator)
        assert result.best is not None
        feasible = [r.values["metric"] for r in result.records if r.feasible]
        assert result.best.values["metric"] == (max(feasible) if higher else min(feasible))
        knee = result.knee()
        runs.append(([r.config for r in result.records], result.best.config, sorted(result.front),
                     knee.config if knee else None))
    if strategy != "nsga2":  # NOTE: Optuna's NSGA-II breaks ties in its crowding sort by the values' order
        assert runs[0] == runs[1]


def test_pareto_file_and_report_say_lower_is_better(tmp_path: Any) -> None:
    from prunekit.report.results import _from_search_pareto
    from prunekit.search.search import write_pareto

    evaluator = _evaluator(lambda c: -_accuracy(c), False)
    result = search(evaluator.space, ["metric", "macs"], {"macs": 0.5}, "random", 6, seed=0, evaluator=evaluator)
    import json

    data = json.loads(write_pareto(result, tmp_path, [result.best.config]).read_text())  # type: ignore[union-attr]
    assert data["higher_is_better"] is False and data["metric_name"] == "metric"
    assert _from_search_pareto(data)["y_better"] == "lower"


def test_the_sensitivity_figure_names_the_worst_layer_whichever_way_the_metric_points() -> None:
    from prunekit.report import plots

    layers = {"a": {"ratios": [0.1, 0.9], "metric": [0.1, 0.6]}, "b": {"ratios": [0.1, 0.9], "metric": [0.1, 1.6]}}
    lower = plots.sensitivity({"metric": "mse", "layers": layers, "higher_is_better": False})
    higher = plots.sensitivity({"metric": "accuracy", "layers": layers})
    assert lower is not None and "most sensitive layer b (mse 1.6" in lower.caption
    assert higher is not None and "most sensitive layer a (accuracy 0.6" in higher.caption


def test_a_proxy_for_a_loss_makes_the_evaluator_minimise() -> None:
    from types import SimpleNamespace

    evaluator = _evaluator(None, None)  # type: ignore[arg-type]
    evaluator.metric = SimpleNamespace(higher_is_better=False, metric_name="mse")  # type: ignore[assignment]
    assert evaluator.maximise is False and evaluator.directions(["metric", "macs"]) == {"metric": "min", "macs": "min"}
    assert evaluator.goodness({"metric": 2.0}) == -2.0
