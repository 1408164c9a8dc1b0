"""On ONNX Runtime the latency table builds each entry's ONNX model directly: filling it calls no exporter,
and a module the builder cannot map is still exported and timed."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import prunekit.measure.onnx as onnx_export
from prunekit import models
from prunekit.graph import DependencyGraph
from prunekit.search import latency_table
from prunekit.search.latency_table import LatencyTable
from prunekit.search.space import SearchSpace

pytest.importorskip("onnxruntime")


def _no_export(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("the exporter was called")


def test_an_onnxruntime_table_fills_its_entries_without_the_exporter(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    net, x = models.create("simple_cnn").eval(), torch.randn(1, 1, 28, 28)
    graph = DependencyGraph.trace(net, x)
    space = SearchSpace.from_graph(graph, levels=(1.0, 0.5), ranks={"conv2": ["tucker:0.5"], "fc1": ["svd:0.25"]})
    monkeypatch.setattr(onnx_export, "export_onnx", _no_export)
    monkeypatch.setattr(torch.onnx, "export", _no_export)
    table = LatencyTable(net, graph, space, x, backend="onnxruntime", cache_dir=tmp_path, threads=1, min_time_s=0.0)
    rng = random.Random(0)
    configs = [space.dense(), {**space.dense(), "rank:conv2": "tucker:0.5", "rank:fc1": "svd:0.25"},
               *({d.name: rng.choice(d.choices) for d in space.dimensions} for _ in range(3))]
    times = [table.layer_ms(name, config) for config in configs for name in table.layers]
    assert all(t > 0 for t in times)
    assert len(table.entries) > len(table.layers)  # NOTE: the factorised chains and pruned widths are entries too
    assert json.loads(next(tmp_path.glob("latency-onnxruntime-*.json")).read_text()) == table.entries


def test_an_entry_the_builder_cannot_map_is_exported_and_timed(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    net, x = models.create("simple_cnn").eval(), torch.randn(1, 1, 28, 28)
    graph = DependencyGraph.trace(net, x)
    space = SearchSpace.from_graph(graph, levels=(1.0, 0.5))
    exported: list[str] = []
    real = onnx_export.export_onnx

    def spy(model: nn.Module, *args: Any, **kwargs: Any) -> Path:
        exported.append(type(model).__name__)
        return real(model, *args, **kwargs)

    # NOTE: the table builds only plain Conv2d/Linear layers and their chains, all of which the builder maps
    monkeypatch.setattr(latency_table, "layer_onnx", lambda module, shape: None)
    monkeypatch.setattr(onnx_export, "export_onnx", spy)
    table = LatencyTable(net, graph, space, x, backend="onnxruntime", threads=1, min_time_s=0.0)
    name = next(iter(table.layers))
    assert table.layer_ms(name, space.dense()) > 0
    assert exported == [type(table.layers[name]).__name__]
