"""round_to="auto" rounds a group only where an (injected) timing table says it is faster, and the
default pruner still lands within 2 % of a MACs target. No layer is timed here: tables are given,
and LayerTimings' measurement is replaced by fixed readings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from prunekit import models
from prunekit.errors import ConfigError, DataError
from prunekit.graph.dependency import DependencyGraph
from prunekit.importance import score
from prunekit.measure import count_macs
from prunekit.structured import allocate
from prunekit.structured.pruner import StructuredPruner
from prunekit.structured.rounding import LayerTimings, TimingTable

from _funnel import X8, Funnel
from _two_conv import X, TwoConv


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return TwoConv() if name == "two_conv" else models.create(name)


def rounding_always_pays(graph: DependencyGraph) -> TimingTable:
    """The worst case for a MACs budget: every multiple of 8 is twice as fast as any other width."""
    return TimingTable({g.id: {w: 1.0 if w % 8 == 0 else 2.0 for w in range(1, g.size + 1)} for g in graph.prunable})


def write(table: TimingTable, path: Path) -> str:
    path.write_text(json.dumps(table.to_dict()))
    return str(path)


@pytest.mark.parametrize("name", ["two_conv", "simple_cnn", "vgg_small", "resnet20"])
@pytest.mark.parametrize("macs", [0.5, 0.25])
def test_default_pruner_lands_within_two_percent_of_a_macs_target(name: str, macs: float, tmp_path: Path) -> None:
    model = build(name)
    graph = DependencyGraph.trace(model, X)
    timings = write(rounding_always_pays(graph), tmp_path / "t.json")
    pruner = StructuredPruner({"macs": macs}, options={"timings": timings}).fit(model, X)
    pruned = pruner.transform(model)
    kept = count_macs(pruned, X) / count_macs(model, X)
    assert 0.98 * macs <= kept <= macs
    for group_id, width in pruner.plan_.meta.get("rounded", {}).items():
        assert len(pruner.plan_.keep[group_id]) == width and width % 8 == 0


def test_auto_without_a_faster_rounding_keeps_exact_widths(tmp_path: Path) -> None:
    model = build("two_conv")
    timings = write(TimingTable({}), tmp_path / "t.json")  # NOTE: no evidence that rounding pays
    pruner = StructuredPruner({"macs": 0.5}, options={"timings": timings}).fit(model, X)
    exact = StructuredPruner({"macs": 0.5}, round_to=1).fit(model, X)
    assert pruner.plan_.keep == exact.plan_.keep
    assert "rounded" not in pruner.plan_.meta
    assert pruner.achieved_["macs"] == pytest.approx(0.4971, abs=1e-4)  # NOTE: was 0.377 with 8/16 rounding
    assert [len(k) for k in pruner.plan_.keep.values()] == [22, 46]


def test_rounding_applied_only_where_the_table_says_it_buys_time(tmp_path: Path) -> None:
    model = build("resnet20")
    exact = StructuredPruner({"macs": 0.5}, round_to=1).fit(model, X)
    widths = {g: len(k) for g, k in exact.plan_.keep.items()}
    odd = [g for g, w in widths.items() if w % 8 and w < exact.plan_.sizes[g]]
    faster, within_noise = odd[-1], odd[-2]
    up = {g: -(-widths[g] // 8) * 8 for g in (faster, within_noise)}
    table = TimingTable({faster: {widths[faster]: 2.0, up[faster]: 1.5},        # 25 % faster: round
                         within_noise: {widths[within_noise]: 2.0, up[within_noise]: 1.96}},  # 2 %: noise
                        noise=0.03)
    pruner = StructuredPruner({"macs": 0.5}, options={"timings": write(table, tmp_path / "t.json")}).fit(model, X)
    assert pruner.plan_.meta["rounded"] == {faster: up[faster]}
    assert len(pruner.plan_.keep[faster]) == up[faster]
    assert 0.98 * 0.5 <= pruner.achieved_["macs"] <= 0.5


def test_allocate_rounds_per_group_and_width() -> None:
    model = build("two_conv")
    graph = DependencyGraph.trace(model, X)
    scores = score(graph, model, "l2")
    table = TimingTable({"conv1.weight:0": {16: 1.0, 24: 0.5}, "conv2.weight:0": {32: 1.0, 48: 0.5}})
    plan = allocate(graph, scores, 0.5, timings=table)  # NOTE: exact 16 and 32 are multiples already
    assert [len(k) for k in plan.keep.values()] == [16, 32]
    plan = allocate(graph, scores, 0.6, timings=table)  # NOTE: exact 13 and 26
    assert [len(k) for k in plan.keep.values()] == [13, 26]  # NOTE: no reading at 13/16 or 26/32
    table = TimingTable({"conv1.weight:0": {13: 1.0, 16: 0.5}, "conv2.weight:0": {26: 1.0, 32: 1.2}})
    assert [len(k) for k in allocate(graph, scores, 0.6, timings=table).keep.values()] == [16, 26]
    assert [len(k) for k in allocate(graph, scores, 0.6, timings=table, round_to=1).keep.values()] == [13, 26]
    assert [len(k) for k in allocate(graph, scores, 0.6, timings=table, round_to=8).keep.values()] == [16, 32]


def test_timing_table_round_trip_and_errors(tmp_path: Path) -> None:
    table = TimingTable({"a": {8: 1.0, 5: 2.0}}, noise=0.05)
    assert TimingTable.from_dict(json.loads(json.dumps(table.to_dict()))) == table
    assert table.pays("a", 5, 8) and not table.pays("a", 8, 5) and not table.pays("b", 5, 8)
    bad = tmp_path / "bad.json"
    bad.write_text('{"times": [1, 2]}')
    with pytest.raises(DataError, match=r"^timings '.*bad.json': not a rounding table \(AttributeError"):
        TimingTable.load(bad)
    with pytest.raises(ConfigError, match=r"^timings: no rounding table at '.*missing.json'\. Pass the path"):
        TimingTable.load(tmp_path / "missing.json")


def test_layer_timings_builds_the_group_layers_and_caches_readings(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    model = build("vgg_small")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    graph = DependencyGraph.trace(model, X)
    seen: list[tuple[int, int, list[tuple[int, ...]]]] = []

    def fake(self: LayerTimings, layers, exact: int, rounded: int) -> list[float]:  # type: ignore[no-untyped-def]
        built = [layer.build(exact)[0] for layer in layers]
        seen.append((exact, rounded, [tuple(m.weight.shape) for m in built]))
        return [0.2, 0.01] if exact == 45 else [0.02, 0.05]  # NOTE: (gain, A/A spread)

    monkeypatch.setattr(LayerTimings, "_measure", fake)
    cache = tmp_path / "rounding.json"
    timings = LayerTimings(model, graph, X, cache=cache)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert timings.pays("features.7.weight:0", 45, 48)  # NOTE: 20 % faster, spread 1 %
    assert not timings.pays("features.7.weight:0", 44, 48)  # NOTE: 2 % faster, spread 5 %: noise
    # NOTE: conv 32 -> 64 writes the group (64 -> 45 outputs), conv 64 -> 64 reads it (45 inputs)
    assert seen[0] == (45, 48, [(64, 45, 3, 3), (45, 32, 3, 3)])  # NOTE: features.10, features.7
    assert json.loads(cache.read_text()) and len(seen) == 2

    monkeypatch.setattr(LayerTimings, "_measure", lambda *a: pytest.fail("measured again"))
    again = LayerTimings(model, graph, X, cache=cache)
    assert again.pays("features.7.weight:0", 45, 48) and not again.pays("features.7.weight:0", 44, 48)


def test_roundings_that_miss_the_band_are_dropped_costliest_first() -> None:
    from prunekit.structured.target import Target, search

    model = build("two_conv")
    graph = DependencyGraph.trace(model, X)
    plan, achieved = search(model, graph, score(graph, model, "l2"), Target(macs=0.5), example_inputs=X,
                            allocate_kwargs={"timings": rounding_always_pays(graph)})
    # NOTE: exact 22/46; both rounded (24/48) miss the band, so the half costing the most MACs (conv1's two
    # channels, read by every conv2 filter) is dropped and conv1 is searched again around conv2 at 48
    assert plan.meta["rounded"] == {"conv2.weight:0": 48}
    assert len(plan.keep["conv2.weight:0"]) == 48
    assert 0.98 * 0.5 <= achieved["macs"] <= 0.5


def test_rounding_does_not_buy_speed_with_the_other_count() -> None:
    from prunekit.structured.target import OTHER_BAND, Target, search

    model = Funnel()
    graph = DependencyGraph.trace(model, X8)
    scores = score(graph, model, "l2")
    _, exact = search(model, graph, scores, Target(params=0.5), example_inputs=X8, allocate_kwargs={"round_to": 1})
    plan, achieved = search(model, graph, scores, Target(params=0.5), example_inputs=X8,
                            allocate_kwargs={"timings": rounding_always_pays(graph)})
    # NOTE: all three roundings pinned (24/32/48) kept 0.569 of the MACs against exact widths' 0.521;
    # the costliest two are dropped and convs.1 alone is rounded
    assert exact["macs"] == pytest.approx(0.521, abs=1e-3)
    assert achieved["macs"] <= (1 + OTHER_BAND) * exact["macs"]
    assert 0.98 * 0.5 <= achieved["params"] <= 0.5
    assert plan.meta["rounded"] == {"convs.1.weight:0": 24}
