"""Search space, exact cost model and latency table on tiny models."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from _models import DepthwiseSE, Residual

from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.measure import count_macs, count_params
from prunekit.search.cost import Cost
from prunekit.search.latency_table import LatencyTable
from prunekit.search.space import SearchSpace, build, widths
from prunekit.structured import residual_blocks


def test_widths_fall_in_round_to_steps_and_keep_the_dense_width() -> None:
    assert widths(16, (1.0, 0.5, 0.1)) == (16, 8, 2)
    assert widths(20, (1.0, 0.5, 0.1), round_to=8) == (20, 16, 8)
    assert widths(3, (0.1,), min_keep=2) == (3, 2)


def test_a_space_from_the_graph_has_one_width_dimension_per_prunable_group() -> None:
    model, x = Residual(), torch.randn(1, 3, 8, 8)
    graph = DependencyGraph.trace(model, x)
    space = SearchSpace.from_graph(graph, levels=(1.0, 0.5), ranks={"a": ["svd:0.5"]}, cuts=(2, 4))
    assert [d.name for d in space.dimensions if d.kind == "width"] == [g.id for g in graph.prunable]
    assert space.dimension("rank:a").choices == ("none", "svd:0.5")
    assert space.valid(space.dense()) and space.dense()["cut:0"] == 1
    assert not space.valid({**space.dense(), "cut:0": 7})
    with pytest.raises(ValueError, match="does not fit the search space"):
        space.check({**space.dense(), graph.prunable[0].id: 5})


@pytest.mark.parametrize("factory", [Residual, DepthwiseSE])
def test_cost_is_exact_against_the_really_pruned_model(factory: type) -> None:
    torch.manual_seed(0)
    model = factory().eval()
    x = torch.randn(1, 3, 8, 8)
    graph = DependencyGraph.trace(model, x)
    space = SearchSpace.from_graph(graph, levels=(1.0, 0.7, 0.4, 0.1), blocks=residual_blocks(model, x))
    cost, scores = Cost(model, graph, space, x), score(graph, model, "l2")
    assert cost.analytic
    rng = random.Random(0)
    for _ in range(6):
        config = space.sample(rng)
        pruned = build(model, graph, space, config, scores, example_inputs=x)
        got = cost(config)
        assert (got["macs"], got["params"]) == (count_macs(pruned, x), count_params(pruned))
        for name, param in pruned.named_parameters():
            assert cost.shape(config, name) == tuple(param.shape)


def test_the_latency_table_fills_once_and_is_reused_from_disk(tmp_path: Path) -> None:
    model, x = Residual().eval(), torch.randn(1, 3, 8, 8)
    graph = DependencyGraph.trace(model, x)
    space = SearchSpace.from_graph(graph, levels=(1.0, 0.5))
    table = LatencyTable(model, graph, space, x, cache_dir=tmp_path, min_time_s=0.0)
    small = {**space.dense(), **{d.name: d.choices[-1] for d in space.dimensions}}
    assert table.predict(small) > 0 and table.predict(space.dense()) > 0
    entries = dict(table.entries)
    # NOTE: the head's input is cut, its output is not; and the dense model's own time
    assert len(entries) == 2 * len(table.layers) - 1 + 1
    assert [k for k in entries if k.startswith("dense model Residual ")] != []
    again = LatencyTable(model, graph, space, x, cache_dir=tmp_path, min_time_s=0.0)
    assert again.entries == entries
    report = table.error([small])
    assert report["rows"][0]["measured_ms"] > 0 and report["mean_relative_error"] >= 0


def test_a_table_entry_is_timed_with_the_layers_padding_mode(tmp_path: Path) -> None:
    """A reflect-padded conv is timed as one (its padding is a separate op) and never shares an entry
    with a zero-padded conv of the same shape."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect"), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    x = torch.randn(1, 3, 8, 8)
    graph = DependencyGraph.trace(model, x)
    space = SearchSpace.from_graph(graph, levels=(1.0,))
    table = LatencyTable(model, graph, space, x, min_time_s=0.0)
    table.layer_ms("0", space.dense())
    assert [k for k in table.entries if "reflect" in k]
    zeros = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), *list(model)[1:]).eval()
    other = LatencyTable(zeros, DependencyGraph.trace(zeros, x), space, x, min_time_s=0.0)
    other.layer_ms("0", space.dense())
    assert not set(other.entries) & set(table.entries)


def test_a_factorised_layer_is_built_and_counted_exactly() -> None:
    torch.manual_seed(0)
    model, x = Residual().eval(), torch.randn(1, 3, 8, 8)
    graph = DependencyGraph.trace(model, x)
    space = SearchSpace.from_graph(graph, levels=(1.0, 0.5), ranks={"head": ["svd:0.25"]})
    config = {**space.dense(), "rank:head": "svd:0.25"}
    built = build(model, graph, space, config, score(graph, model, "l2"), example_inputs=x)
    assert isinstance(built.head, torch.nn.Sequential)
    got = Cost(model, graph, space, x)(config)
    assert (got["macs"], got["params"]) == (count_macs(built, x), count_params(built))
    assert got["params"] < count_params(model)


def test_the_rest_of_the_model_shrinks_with_the_activations_kept_not_the_channels(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """BatchNorm, activations and pooling move each output channel's H x W values: cutting 8 channels of
    a 28 x 28 layer saves 16 times what cutting 8 of a 7 x 7 layer does."""
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(4),
                                torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 4)).eval()
    x = torch.randn(1, 1, 28, 28)
    graph = DependencyGraph.trace(model, x)
    space = SearchSpace.from_graph(graph, levels=(1.0, 0.5))
    table = LatencyTable(model, graph, space, x, min_time_s=0.0)
    monkeypatch.setattr(LatencyTable, "layer_ms", lambda self, name, config: 0.0)  # NOTE: only the rest is priced
    monkeypatch.setattr(LatencyTable, "reference_ms", lambda self: 10.0)
    first, second = (d.name for d in space.dimensions)
    big = table.predict({**space.dense(), first: 8})    # the 28 x 28 layer halved
    small = table.predict({**space.dense(), second: 8})  # the 7 x 7 layer halved
    total = 16 * 784 + 16 * 49 + 4  # NOTE: the head's 4 outputs at one position
    assert big == pytest.approx(10.0 * (8 * 784 + 16 * 49 + 4) / total)
    assert small == pytest.approx(10.0 * (16 * 784 + 8 * 49 + 4) / total)


def test_one_slow_timing_of_the_dense_model_does_not_price_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = Residual().eval(), torch.randn(1, 3, 8, 8)
    graph = DependencyGraph.trace(model, x)
    space = SearchSpace.from_graph(graph, levels=(1.0, 0.5))
    table = LatencyTable(model, graph, space, x, min_time_s=0.0)
    timings = iter([10.0, 100.0, 12.0])  # NOTE: the second timing hit a slow spell of the machine
    monkeypatch.setattr(LatencyTable, "layer_ms", lambda self, name, config: 1.0)
    monkeypatch.setattr(LatencyTable, "_time_whole", lambda self, model, min_time_s=None: next(timings))
    assert table.predict(space.dense()) == pytest.approx(12.0)
    assert table.measure(space.dense()) == pytest.approx(12.0)


def test_a_whole_model_is_timed_against_the_dense_model_in_the_same_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow spell (3x) that slows every model alike does not move a configuration's measured time:
    it is its ratio to the dense model in the same rounds, times the median of three dense timings."""
    from types import SimpleNamespace

    model, x = Residual().eval(), torch.randn(1, 3, 8, 8)
    graph = DependencyGraph.trace(model, x)
    space = SearchSpace.from_graph(graph, levels=(1.0, 0.5))
    table = LatencyTable(model, graph, space, x, min_time_s=0.0)
    spells = iter([3.0, 1.0, 1.0, 1.0, 1.0, 3.0, 3.0, 1.0, 1.0])  # NOTE: 3 reference timings, then 3 rounds of 2

    def fake(net: torch.nn.Module, *args: object, **kwargs: object) -> SimpleNamespace:
        channels = sum(m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d))
        return SimpleNamespace(median_ms=float(channels) * next(spells))

    monkeypatch.setattr("prunekit.search.latency_table.measure_latency", fake)
    small = {**space.dense(), **{d.name: d.choices[-1] for d in space.dimensions}}
    built = build(model, graph, space, small, score(graph, model, "l2"))
    dense = float(sum(m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)))
    kept = float(sum(m.out_channels for m in built.modules() if isinstance(m, torch.nn.Conv2d)))
    assert kept < dense
    assert table.measure(small) == pytest.approx(kept)
