"""Target: one quantity, one convention; search meets it and reports what it achieved."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit import models
from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.measure import count_macs, count_params
from prunekit.recover import parse_config
from prunekit.structured import StructuredPruner, Target, apply, search
from prunekit.structured.allocate import fill_candidates, grow


def test_target_takes_exactly_one_quantity() -> None:
    assert Target(macs=0.5).kind == "macs" and Target(macs=0.5).value == 0.5
    assert Target(ratio=0.3).to_dict() == {"ratio": 0.3}
    with pytest.raises(ConfigError, match="exactly one"):
        parse_config(Target, {"macs": 0.5, "ratio": 0.2})
    with pytest.raises(ConfigError, match="exactly one"):
        parse_config(Target, {})
    with pytest.raises(ConfigError, match="ratio.*1.5"):
        parse_config(Target, {"ratio": 1.5})
    with pytest.raises(ConfigError, match="macs"):
        parse_config(Target, {"macs": 0.0})


def _setup(name: str) -> tuple[torch.nn.Module, torch.Tensor, DependencyGraph, dict]:
    torch.manual_seed(0)
    model = models.create(name).eval()
    x = models.example_input(name)
    graph = DependencyGraph.trace(model, x)
    return model, x, graph, dict(score(graph, model, "l2"))


@pytest.mark.parametrize(("name", "kind", "scope"), [
    ("lenet5", "macs", "local"), ("lenet5", "params", "global"),
    pytest.param("resnet20", "macs", "global", marks=pytest.mark.slow),
])
def test_search_meets_the_target_closely_and_reports_it(name: str, kind: str, scope: str) -> None:
    model, x, graph, scores = _setup(name)
    plan, achieved = search(model, graph, scores, Target(**{kind: 0.5}), example_inputs=x,
                            allocate_kwargs={"scope": scope})
    pruned = apply(model, graph, plan, example_inputs=x)
    dense = count_macs(model, x) if kind == "macs" else count_params(model)
    got = count_macs(pruned, x) if kind == "macs" else count_params(pruned)
    assert got / dense == pytest.approx(achieved[kind])
    assert 0.44 <= achieved[kind] <= 0.5  # never above the target, and close below it
    assert achieved[f"{kind}_count"] == got and 0 < achieved["ratio"] < 1
    assert plan.meta["target"] == {kind: 0.5}


def test_ratio_target_is_allocated_directly() -> None:
    model, x, graph, scores = _setup("simple_cnn")
    plan, achieved = search(model, graph, scores, Target(ratio=0.5), example_inputs=x)
    assert achieved["ratio"] == 0.5 and achieved["channels_removed"] == pytest.approx(0.5)
    assert achieved["macs"] < 1 and achieved["params"] < 1


def test_macs_kept_fraction_one_means_no_pruning() -> None:
    model, x, graph, scores = _setup("simple_cnn")
    plan, achieved = search(model, graph, scores, Target(macs=1.0), example_inputs=x)
    assert achieved["macs"] == 1.0 and plan.ratio == 0.0


def test_unreachable_target_names_the_best_reachable_value() -> None:
    model = models.create("simple_cnn")
    x = models.example_input("simple_cnn")
    graph = DependencyGraph.trace(model, x, ignore=("conv1",))
    scores = dict(score(graph, model, "l2"))
    with pytest.raises(ConfigError, match=r"cannot be reached.*keeps 0\.\d+ of the dense macs"):
        search(model, graph, scores, Target(macs=0.01), example_inputs=x)


def test_latency_target_uses_the_measured_latency(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x, graph, scores = _setup("lenet5")
    calls: list[int] = []

    class Stats:
        def __init__(self, m: torch.nn.Module) -> None:
            self.median_ms = count_macs(m, x) / 1e4  # a noise-free stand-in for a timer

    def fake(m: torch.nn.Module, inputs: object, **kwargs: object) -> Stats:
        calls.append(int(kwargs["batch_size"]))  # type: ignore[call-overload]
        return Stats(m)

    monkeypatch.setattr("prunekit.structured.target.measure_latency", fake)
    plan, achieved = search(model, graph, scores, Target(latency=0.6, batch_size=8), example_inputs=x,
                            allocate_kwargs={"round_to": 1})
    assert 0.5 <= achieved["latency"] <= 0.6 and achieved["latency"] == pytest.approx(achieved["macs"])
    # dense once, each (cached) bisection step alternately with dense in 2 rounds of 2 calls,
    # then the answer confirmed in 5 rounds (10 calls)
    assert set(calls) == {8} and (len(calls) - 11) % 4 == 0 and len(calls) <= 11 + 4 * 8


def test_latency_answer_is_confirmed_and_a_lucky_reading_is_not_returned(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every new model's first timing reads 40 % fast (a lucky stretch): the two-round bisection
    settles on a plan that is really too slow; the five-round confirmation catches it."""
    model, x, graph, scores = _setup("lenet5")
    seen: set[int] = set()

    class Stats:
        def __init__(self, m: torch.nn.Module) -> None:
            lucky = id(m) not in seen and m is not model
            seen.add(id(m))
            self.median_ms = count_macs(m, x) / 1e4 * (0.6 if lucky else 1.0)

    monkeypatch.setattr("prunekit.structured.target.measure_latency", lambda m, inputs, **kw: Stats(m))
    dense = count_macs(model, x)
    plan, achieved = search(model, graph, scores, Target(latency=0.6), example_inputs=x,
                                 allocate_kwargs={"round_to": 1})
    true_kept = count_macs(apply(model, graph, plan, example_inputs=x), x) / dense
    assert true_kept <= 0.6, "a plan whose real latency misses the target was returned"
    assert achieved["latency"] == pytest.approx(true_kept) and true_kept >= 0.4


@pytest.mark.parametrize("round_to", [1, 4])
def test_fill_adds_the_best_removed_channels_back_until_the_budget_is_used(round_to: int) -> None:
    model, x, graph, scores = _setup("resnet20")
    kwargs = {"round_to": round_to}
    bisected, before = search(model, graph, scores, Target(macs=0.25), example_inputs=x,
                              allocate_kwargs=kwargs, fill=False, verify_result=False)
    plan, after = search(model, graph, scores, Target(macs=0.25), example_inputs=x, allocate_kwargs=kwargs)
    assert before["filled_channels"] == 0 and after["filled_channels"] > 0
    assert before["macs"] < after["macs"] <= 0.25
    assert after["ratio"] == before["ratio"] and plan.meta["filled_channels"] == after["filled_channels"]
    added = 0
    for gid, kept in plan.keep.items():
        assert set(bisected.keep[gid]) <= set(kept)  # only adds channels back
        extra = len(kept) - len(bisected.keep[gid])
        added += extra
        if extra:  # the added ones are the best-scoring of those the bisected plan removed
            removed = torch.tensor(bisected.removed(gid))
            best = removed[scores[gid][removed].argsort(descending=True)[:extra]]
            assert set(best.tolist()) <= set(kept)
            assert len(kept) % round_to == 0 or len(kept) == graph.group(gid).size
    assert added == after["filled_channels"]
    dense = count_macs(model, x)
    pruned = apply(model, graph, plan, example_inputs=x)  # verified against the masked model
    assert count_macs(pruned, x) / dense == pytest.approx(after["macs"])
    # maximal: one more step of any group would break the budget
    for gid, (_, size) in fill_candidates(graph, scores, plan, **kwargs).items():
        bigger = apply(model, graph, grow(plan, scores, gid, size), example_inputs=x, verify_result=False)
        assert count_macs(bigger, x) / dense > 0.25, gid


def test_fill_leaves_per_layer_overrides_and_ignored_modules_alone() -> None:
    model, x, graph, scores = _setup("resnet20")
    kwargs = {"round_to": 1, "layer_channels": {"layer1.0.conv1": 3}, "ignore": ["layer2.0.conv1"]}
    plan, achieved = search(model, graph, scores, Target(macs=0.4), example_inputs=x, allocate_kwargs=kwargs)
    producer = {m.module: g.id for g in graph.groups for m in g.by_role("producer")}
    assert len(plan.keep[producer["layer1.0.conv1"]]) == 16 - 3
    assert producer["layer2.0.conv1"] not in plan.keep
    assert achieved["macs"] <= 0.4


class _GroupedCnn(nn.Module):
    """conv2 has 4 groups, so conv1's and conv2's channel j are cut with j + 2, j + 4, j + 6 (units
    of 4 channels); conv3's are cut one by one."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, groups=4)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x))))).mean((2, 3)))


def test_channels_removed_counts_channels_not_units() -> None:
    torch.manual_seed(0)
    model, x = _GroupedCnn().eval(), torch.randn(1, 3, 8, 8)
    units = {g.id: (g.size, g.channels_per_unit) for g in DependencyGraph.trace(model, x).groups if g.prunable}
    assert sorted(units.values()) == [(2, 4), (2, 4), (8, 1)]
    pruner = StructuredPruner({"macs": 0.5}, round_to=1, scope="global")
    pruned = pruner.fit_transform(model, x)
    cut = sum(8 - getattr(pruned, name).out_channels for name in ("conv1", "conv2", "conv3"))
    assert pruner.achieved_["channels_removed"] == pytest.approx(cut / 24)
    assert pruner.plan_.ratio != pytest.approx(cut / 24)  # the plan's ratio counts units
