"""The latency look-up table prices factorised layers: a rank choice is timed as the chain of layers
it builds (at the layer's pruned widths), once, cached on disk; a prediction moves with that entry;
``search_model`` takes ranks with a latency objective or target."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from prunekit import data, models
from prunekit.decompose import METHODS
from prunekit.decompose.methods import SVD
from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.search.latency_table import LatencyTable
from prunekit.search.space import SearchSpace, build
from prunekit.workflows.common import task_of
from prunekit.workflows.search import search_model


def _key(module: nn.Module, shape: tuple[int, ...]) -> str:
    return f"{' '.join(repr(module).split())}|{shape}"


def _cnn() -> tuple[nn.Module, torch.Tensor, DependencyGraph, SearchSpace]:
    torch.manual_seed(0)
    net, x = models.create("simple_cnn").eval(), torch.randn(1, 1, 28, 28)
    graph = DependencyGraph.trace(net, x)
    space = SearchSpace.from_graph(graph, levels=(1.0, 0.5), ranks={"conv2": ["tucker:0.5"], "fc1": ["svd:0.25"]})
    return net, x, graph, space


def test_a_factorised_layer_is_timed_as_the_chain_build_makes_once_and_read_from_the_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    net, x, graph, space = _cnn()
    # NOTE: widths cut too: the chain is the pruned layer's factorisation, as build makes it
    config = {**{d.name: d.choices[-1] for d in space.dimensions if d.kind == "width"},
              "rank:conv2": "tucker:0.5", "rank:fc1": "svd:0.25"}
    table = LatencyTable(net, graph, space, x, cache_dir=tmp_path, threads=1, min_time_s=0.0)
    assert table.predict(config) > 0
    built = build(net, graph, space, config, score(graph, net, "l2"), example_inputs=x, weights=False)
    assert isinstance(built.conv2, nn.Sequential) and isinstance(built.fc1, nn.Sequential)
    seen: dict[str, tuple[int, ...]] = {}

    def record(name: str) -> Any:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            seen[name] = tuple(args[0].shape)
        return hook
    for name in ("conv2", "fc1"):
        built.get_submodule(name).register_forward_pre_hook(record(name))
    built(x)
    conv2, fc1 = _key(built.conv2, seen["conv2"]), _key(built.fc1, seen["fc1"])
    assert conv2 in table.entries and fc1 in table.entries
    assert built.conv2[0].in_channels < net.conv2.in_channels  # NOTE: the entry is of the pruned layer's chain
    assert table.layer_ms("fc1", config) == table.entries[fc1] > 0
    assert table.measure(config) > 0  # NOTE: end to end, the built model with its layers factorised as shells
    cached = json.loads(next(tmp_path.glob("latency-torch-b1-t1-*.json")).read_text())
    assert conv2 in cached and fc1 in cached

    def measured(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a table read from the cache measured an entry again")
    monkeypatch.setattr("prunekit.search.latency_table.measure_latency", measured)
    again = LatencyTable(net, graph, space, x, cache_dir=tmp_path, threads=1, min_time_s=0.0)
    for name in again.layers:
        assert again.layer_ms(name, config) == table.layer_ms(name, config)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_a_factorised_prediction_moves_by_the_chains_time_against_the_layers(backend: str) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)).eval()
    x = torch.randn(1, 64)
    graph = DependencyGraph.trace(net, x)
    space = SearchSpace.from_graph(graph, levels=(1.0,), ranks={"2": ["svd:0.1"]})
    table = LatencyTable(net, graph, space, x, backend=backend, threads=1, min_time_s=0.0)
    dense = space.dense()
    factorised = {**dense, "rank:2": "svd:0.1"}
    chain, layer = table.layer_ms("2", factorised), table.layer_ms("2", dense)
    assert chain != layer and len(table.entries) == 2  # NOTE: the Linear and its two-Linear chain
    moved = table.predict(factorised) - table.predict(dense)
    assert moved == pytest.approx(chain - layer, abs=1e-9)
    assert (moved < 0) == (chain < layer)


def _setup(npz: Path) -> tuple[nn.Module, Any, Any]:
    splits = data.load(str(npz))
    torch.manual_seed(0)
    net = models.create("simple_cnn").eval()
    return net, splits, task_of(splits, None)


def test_a_rank_search_takes_a_latency_objective_and_target(tiny_npz: Path, tmp_path: Path) -> None:
    net, splits, task = _setup(tiny_npz)
    found = search_model(net, splits, task, budget=4, constraints={"latency_ms": 1e3, "macs": 0.6}, ranks=True,
                         widths=False, objectives=("metric", "latency"), levels=(1.0, 0.5, 0.25), val_samples=32,
                         state_dir=tmp_path)
    records = found["result"].records
    assert records and all(r.values["latency"] > 0 for r in records)
    assert found["ranks"] and found["best"].values["latency"] <= 1e3
    # NOTE: ranks alone: configurations differ only in their factorised layers, and so do their latencies
    assert len({round(r.values["latency"], 9) for r in records}) > 1
    cached = json.loads(next((tmp_path / "latency").glob("latency-torch-*.json")).read_text())
    assert any(k.startswith("Sequential(") for k in cached)


def test_latency_with_a_method_the_table_cannot_build_is_a_one_line_error(tiny_npz: Path) -> None:
    class Mine(SVD):
        kind = "mine"

    net, splits, task = _setup(tiny_npz)
    METHODS.add("mine", Mine)
    try:
        with pytest.raises(ConfigError, match="search: the latency look-up table times factorised layers of the "
                                              "svd, tucker and cp layouts; mine builds layers of its own") as caught:
            search_model(net, splits, task, budget=2, constraints={"latency_ms": 1.0}, ranks=["svd", "mine"],
                         val_samples=32)
        assert "\n" not in str(caught.value)
    finally:
        METHODS.remove("mine")
