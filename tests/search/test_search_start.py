"""Starting points and finalists: a search scores the uniform allocation at the budget first (so its
best is never worse by its own proxy than the cut it should improve on), Optuna studies get it as
their first trial, and the fine-tune rung re-ranks finalists that use the budget."""

from __future__ import annotations

import pytest
import torch
from _models import Residual

from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.search.cost import Cost
from prunekit.search.evaluator import Evaluator, Record, key_of
from prunekit.search.search import NEAR, finalists_of, search, uniform_start
from prunekit.search.space import SearchSpace


def _evaluator(metric_of, levels=(1.0, 0.75, 0.5, 0.25)) -> Evaluator:
    torch.manual_seed(0)
    model, x = Residual().eval(), torch.randn(1, 3, 8, 8)
    graph = DependencyGraph.trace(model, x)
    space = SearchSpace.from_graph(graph, levels=levels)
    return Evaluator(space, {}, model=model, graph=graph, scores=score(graph, model, "l2"),
                     cost=Cost(model, graph, space, x), metric_of=metric_of)


def test_uniform_cuts_every_width_by_the_same_fraction() -> None:
    space = _evaluator(lambda c: 0.0).space
    config = space.uniform(0.5)
    for d in space.dimensions:
        if d.kind == "width":
            # the narrowest choice keeping half: no smaller choice keeps half, and this one does
            assert config[d.name] >= d.size * 0.5 and not any(d.size * 0.5 <= c < config[d.name] for c in d.choices)
    assert space.uniform(1.0) == space.dense()


def test_uniform_start_is_the_widest_uniform_cut_meeting_the_budget() -> None:
    evaluator = _evaluator(lambda c: 0.0, levels=tuple(round(1 - 0.05 * i, 2) for i in range(20)))
    evaluator.constraints = {"macs": 0.3}
    start = uniform_start(evaluator)
    assert start is not None and evaluator.cheap_feasible(start)
    space = evaluator.space
    # any uniform cut keeping more of every group breaks the budget
    wider = [c for c in (space.uniform(f / 100) for f in range(1, 101)) if all(
        c[n] >= start[n] for n in space.names if space.dimension(n).kind == "width") and c != start]
    assert wider and not any(evaluator.cheap_feasible(c) for c in wider)
    # and it is filled up: no single group can take its next wider choice within the budget
    for d in space.dimensions:
        if d.kind == "width" and start[d.name] != d.choices[0]:
            bigger = d.choices[d.choices.index(start[d.name]) - 1]
            assert not evaluator.cheap_feasible({**start, d.name: bigger})
    evaluator.constraints = {"macs": 1e-6}
    assert uniform_start(evaluator) is None  # NOTE: not even one channel per group fits


@pytest.mark.parametrize("strategy", ["random", "tpe"])
def test_the_start_is_scored_first_and_counts_in_the_budget(strategy: str, tmp_path) -> None:
    seen: list[str] = []
    evaluator = _evaluator(lambda c: seen.append(key_of(c)) or float(sum(v for v in c.values() if isinstance(v, int))))
    start = evaluator.space.uniform(0.5)
    result = search(evaluator.space, ["metric", "macs"], {"macs": 0.6}, strategy, 6, seed=0, evaluator=evaluator,
                    state_dir=tmp_path, start=[start])
    assert seen[0] == key_of(start) and seen.count(key_of(start)) == 1
    assert result.evaluations == 6 and len(seen) == 6
    assert any(key_of(r.config) == key_of(start) for r in result.records)


def test_the_start_leaves_the_strategy_its_last_evaluation() -> None:
    seen: list[str] = []
    evaluator = _evaluator(lambda c: seen.append(key_of(c)) or 0.5)
    search(evaluator.space, ["metric", "macs"], {"macs": 0.6}, "random", 1, seed=0, evaluator=evaluator,
           start=[evaluator.space.uniform(0.5)])
    assert len(seen) == 1 and seen[0] != key_of(evaluator.space.uniform(0.5))


def test_finalists_are_the_start_and_the_best_near_the_budget() -> None:
    def rec(name: str, metric: float, macs: float, feasible: bool = True) -> Record:
        return Record({"g": name}, {"metric": metric, "macs": macs}, feasible)
    start = rec("uniform", 0.50, 0.25)
    far = rec("far", 0.90, 0.05)  # NOTE: tops the proxy far under the budget
    near = [rec(f"n{i}", 0.6 - 0.01 * i, 0.25 * (1 - NEAR / 2)) for i in range(6)]
    over = rec("over", 0.99, 0.30, feasible=False)
    got = finalists_of([start, far, over, *near], {"macs": 0.25}, start=[start.config], count=4)
    assert [r.config["g"] for r in got] == ["uniform", "n0", "n1", "n2", "n3"]
    # nothing near the budget: the best feasible ones
    assert [r.config["g"] for r in finalists_of([far, over], {"macs": 0.25}, count=4)] == ["far"]
