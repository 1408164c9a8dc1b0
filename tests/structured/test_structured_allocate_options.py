"""allocate's per-layer controls: ignored layers, per-layer ratios and counts, rounding, minimum width."""

from __future__ import annotations

import pytest
import torch

from prunekit import models
from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.structured import allocate, apply
from prunekit.structured.allocate import round_multiple
from prunekit.structured.rounding import TimingTable


@pytest.fixture(scope="module")
def cnn() -> tuple[torch.nn.Module, torch.Tensor, DependencyGraph, dict]:
    torch.manual_seed(0)
    model = models.create("simple_cnn")
    x = models.example_input("simple_cnn")
    graph = DependencyGraph.trace(model, x)
    return model, x, graph, dict(score(graph, model, "l1"))


def test_output_classes_are_never_pruned(cnn) -> None:  # type: ignore[no-untyped-def]
    model, x, graph, scores = cnn
    assert "fc2.weight:0" not in scores and not graph.group("fc2.weight:0").prunable
    plan = allocate(graph, scores, 0.9)
    assert "fc2.weight:0" not in plan.keep
    assert apply(model, graph, plan, example_inputs=x)(x).shape == (1, 10)


def test_ignored_modules_keep_their_outputs(cnn) -> None:  # type: ignore[no-untyped-def]
    _, _, graph, scores = cnn
    plan = allocate(graph, scores, 0.5, ignore=("conv2",))
    # conv2 writes its own channels (kept whole) and only reads conv1's (still cut).
    assert "conv2.weight:0" not in plan.keep and len(plan.keep["conv1.weight:0"]) < graph.group("conv1.weight:0").size
    assert len(plan.keep["fc1.weight:0"]) == 32
    with pytest.raises(ConfigError, match="no module 'conv3'.*Did you mean"):
        allocate(graph, scores, 0.5, ignore=("conv3",))


def test_layer_channels_remove_the_lowest_scoring_channels(cnn) -> None:  # type: ignore[no-untyped-def]
    _, _, graph, scores = cnn
    plan = allocate(graph, scores, 0.0, layer_channels={"conv1": 2})
    lowest = set(torch.argsort(scores["conv1.weight:0"])[:2].tolist())
    assert set(plan.removed("conv1.weight:0")) == lowest
    assert plan.removed("conv2.weight:0") == () and plan.removed("fc1.weight:0") == ()


def test_layer_ratios_override_the_shared_ratio(cnn) -> None:  # type: ignore[no-untyped-def]
    _, _, graph, scores = cnn
    for scope in ("local", "global"):
        plan = allocate(graph, scores, 0.25, scope=scope, layer_ratios={"fc1": 0.75})
        assert len(plan.keep["fc1.weight:0"]) == 16


def test_layer_overrides_are_checked(cnn) -> None:  # type: ignore[no-untyped-def]
    _, _, graph, scores = cnn
    with pytest.raises(ConfigError, match="'fc2' cannot be pruned"):
        allocate(graph, scores, 0.0, layer_channels={"fc2": 1})
    with pytest.raises(ConfigError, match="between 0 and 3"):
        allocate(graph, scores, 0.0, layer_channels={"conv1": 4})
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        allocate(graph, scores, 0.0, layer_ratios={"conv1": 1.0})


def test_round_to_and_minimum_width(cnn) -> None:  # type: ignore[no-untyped-def]
    _, _, graph, scores = cnn
    plan = allocate(graph, scores, 0.4, round_to=8)
    assert len(plan.keep["fc1.weight:0"]) % 8 == 0
    assert len(plan.keep["conv2.weight:0"]) == 8  # 5 kept, rounded up to 8
    tiny = allocate(graph, scores, 0.999, round_to=1)
    assert all(len(k) == 1 for k in tiny.keep.values())
    with pytest.raises(ConfigError, match="round_to must be 'auto' or an int >= 1"):
        allocate(graph, scores, 0.5, round_to=0)


def test_auto_rounding_follows_the_group_width() -> None:
    assert [round_multiple(n, "auto") for n in (1, 15, 16, 63, 64, 2048)] == [1, 1, 8, 8, 16, 16]
    assert round_multiple(64, 4) == 4  # an explicit multiple applies to every group


def test_auto_rounding_rounds_wide_groups_and_keeps_overrides_exact(cnn) -> None:  # type: ignore[no-untyped-def]
    _, _, graph, scores = cnn
    assert graph.group("fc1.weight:0").size == 64 and graph.group("conv2.weight:0").size < 32
    assert len(allocate(graph, scores, 0.3).keep["fc1.weight:0"]) == 45  # "auto" without timings: exact
    faster = TimingTable({"fc1.weight:0": {45: 2.0, 48: 1.0}})  # NOTE: 48 channels measured faster than 45
    plan = allocate(graph, scores, 0.3, timings=faster)
    assert len(plan.keep["fc1.weight:0"]) == 48  # 64 - floor(19.2) = 45 kept, rounded up to 48
    conv2 = graph.group("conv2.weight:0").size
    assert len(plan.keep["conv2.weight:0"]) == conv2 - int(conv2 * 0.3)  # narrow: exact
    exact = allocate(graph, scores, 0.0, layer_channels={"fc1": 3}, timings=TimingTable({"fc1.weight:0": {61: 2.0, 64: 1.0}}))
    assert len(exact.keep["fc1.weight:0"]) == 61  # a per-layer count is what the user asked for
    assert len(allocate(graph, scores, 0.0, layer_channels={"fc1": 3}, round_to=8).keep["fc1.weight:0"]) == 64
