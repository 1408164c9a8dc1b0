"""The local strategy (evolution near the best found, the uniform start first) and ``proxy_steps``
(fine-tune steps before every proxy evaluation): local climbs where the good allocations lie near
the uniform one, every configuration it scores is filled up to the budget, and the steps reach the
proxy for every evaluation of a search (and are one-line errors when wrong)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _models import Residual, tiny_splits, two_conv_classifier
from torch import nn

from prunekit import tasks
from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.search.cost import Cost
from prunekit.search.evaluator import Evaluator, key_of
from prunekit.search.proxy import Proxy
from prunekit.search.search import search, uniform_start
from prunekit.search.space import SearchSpace
from prunekit.search.strategies.local import local
from prunekit.workflows.search import search_model

LEVELS = tuple(round(1 - 0.05 * i, 2) for i in range(20))


def _stack() -> nn.Module:
    """Five channel groups of 16-32 channels: a space of millions of allocations."""
    torch.manual_seed(0)
    widths, layers = (3, 16, 24, 32, 24, 16), []
    for c_in, c_out in zip(widths, widths[1:]):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5)).eval()


def _evaluator(metric_of: Any, model: nn.Module | None = None) -> Evaluator:
    model, x = (model or _stack()).eval(), torch.randn(1, 3, 8, 8)
    graph = DependencyGraph.trace(model, x)
    space = SearchSpace.from_graph(graph, levels=LEVELS)
    return Evaluator(space, {}, model=model, graph=graph, scores=score(graph, model, "l2"),
                     cost=Cost(model, graph, space, x), metric_of=metric_of)


def _near_uniform(names: list[str], sizes: dict[str, int]) -> Any:
    """A metric peaked at an allocation a few steps from uniform: the first group wider, the rest narrower."""
    want = {n: (0.75 if i == 0 else 0.4) for i, n in enumerate(names)}
    return lambda c: -sum((c[n] / sizes[n] - want[n]) ** 2 for n in names)


def _searched(strategy: str, budget: int) -> tuple[Evaluator, Any, Any]:
    probe = _evaluator(lambda c: 0.0)
    names = [d.name for d in probe.space.dimensions if d.kind == "width"]
    sizes = {d.name: d.size for d in probe.space.dimensions}
    evaluator = _evaluator(_near_uniform(names, sizes))
    evaluator.constraints = {"macs": 0.3}
    start = uniform_start(evaluator)
    result = search(evaluator.space, ["metric", "macs"], {"macs": 0.3}, strategy, budget, seed=0,
                    evaluator=evaluator, start=[start])
    return evaluator, result, start


def test_local_climbs_from_the_uniform_start_and_beats_random_at_the_same_budget() -> None:
    evaluator, result, start = _searched("local", 30)
    assert result.best is not None and result.evaluations == 30
    assert result.best.values["metric"] > evaluator.metric_value(start)
    _, randomly, _ = _searched("random", 30)
    assert randomly.best is not None and result.best.values["metric"] > randomly.best.values["metric"]


def test_every_configuration_local_scores_meets_the_budget_and_is_filled_up_to_it() -> None:
    evaluator, result, _ = _searched("local", 20)
    assert len(result.records) >= 10
    for record in result.records:
        assert record.feasible and record.values["macs"] <= 0.3
        assert evaluator.filled(record.config) == record.config  # NOTE: no group can take its next width


def test_local_without_a_start_begins_from_a_feasible_configuration() -> None:
    evaluator = _evaluator(lambda c: float(sum(v for v in c.values())))
    evaluator.constraints, evaluator.budget = {"macs": 0.4}, 3
    local(evaluator, seed=0, state={}, save=lambda state: None)
    assert evaluator.evaluations == 3 and all(r.feasible for r in evaluator.history)


def test_local_stops_when_the_space_holds_nothing_new() -> None:
    evaluator = _evaluator(lambda c: 0.0, Residual())
    evaluator.constraints, evaluator.budget = {"macs": 1.0}, 50  # NOTE: only the dense model is filled up
    state: dict[str, Any] = {}
    local(evaluator, seed=0, state=state, save=lambda s: None)
    assert evaluator.evaluations == 1 and state["draws"] == 20 * 50
    assert {key_of(r.config) for r in evaluator.history} == {key_of(evaluator.space.dense())}


@pytest.mark.parametrize(("proxy_steps", "finetune_steps", "want"), [(3, 0, {3}), (3, 5, {3, 5}), (0, 0, {0})])
def test_proxy_steps_reach_every_proxy_evaluation(monkeypatch: pytest.MonkeyPatch, proxy_steps: int,
                                                  finetune_steps: int, want: set[int]) -> None:
    asked: list[int] = []
    scored = Proxy.__call__

    def recording(self: Proxy, model: nn.Module, *, finetune_steps: int | None = None) -> float:
        asked.append(finetune_steps)
        return scored(self, model, finetune_steps=finetune_steps)

    monkeypatch.setattr(Proxy, "__call__", recording)
    found = search_model(two_conv_classifier(), tiny_splits(64), tasks.create("classification"), strategy="local", budget=5,
                         constraints={"macs": 0.5}, seed=0, levels=(1.0, 0.75, 0.5, 0.25), val_samples=16,
                         proxy_steps=proxy_steps, finetune_steps=finetune_steps)
    n = found["result"].evaluations
    assert n >= 2 and asked[:n] == [proxy_steps] * n  # NOTE: the search itself, every evaluation
    rung = asked[n:]  # NOTE: the finalists' rung, only where it asks for more steps than the search had
    assert rung == [finetune_steps] * len(rung) and bool(rung) == (finetune_steps > proxy_steps)
    assert set(asked) == want and all(r.fidelity in want for r in found["result"].records)


def test_proxy_steps_tune_a_copy_and_change_the_score() -> None:
    net, splits = two_conv_classifier(), tiny_splits(64)
    batches = [(splits.train.tensors[0][:32], splits.train.tensors[1][:32])]
    proxy = Proxy(tasks.create("classification"), batches, batches, bn_batches=1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    plain, tuned = proxy(net), proxy(net, finetune_steps=20)
    assert tuned != plain  # NOTE: 20 SGD steps on the batch it is scored on move its accuracy
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_wrong_proxy_steps_are_a_one_line_error(bad: Any) -> None:
    with pytest.raises(ConfigError, match=r"--proxy-steps is a number of fine-tune batches, an int >= 0; got "):
        search_model(two_conv_classifier(), tiny_splits(64), tasks.create("classification"), strategy="local", budget=2,
                     constraints={"macs": 0.5}, proxy_steps=bad)


def test_the_command_and_a_recipe_pass_proxy_steps_on(search_arguments: Any) -> None:
    from prunekit.recipes.schema import SearchStageOptions

    seen = search_arguments(["search", "--model", "simple_cnn", "--target-macs", "0.5", "--strategy", "local",
                             "--proxy-steps", "16"])
    assert seen["proxy_steps"] == 16 and seen["strategy"] == "local"
    stage = SearchStageOptions.model_validate({"target": {"macs": 0.5}, "strategy": "local", "proxy_steps": 8})
    assert stage.proxy_steps == 8 and stage.strategy == "local"
