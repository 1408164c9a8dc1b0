"""Costs in allocation: MACs/params per channel (the fill's knapsack), latency weights (cost='latency')."""

from __future__ import annotations

import math

import pytest
import torch

import prunekit.structured.cost as cost
from prunekit import models
from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.measure import count_macs
from prunekit.structured import StructuredPruner, allocate
from prunekit.structured.cost import channel_costs, latency_weights


@pytest.fixture(scope="module")
def cnn() -> tuple[torch.nn.Module, torch.Tensor, DependencyGraph]:
    torch.manual_seed(0)
    model = models.create("simple_cnn")
    x = models.example_input("simple_cnn")
    return model, x, DependencyGraph.trace(model, x)


def test_channel_costs_are_the_macs_and_params_one_channel_accounts_for(cnn) -> None:  # type: ignore[no-untyped-def]
    model, x, graph = cnn
    macs = channel_costs(model, graph, x, "macs")
    # conv1 channel: 1/4 of conv1 (28,224 MACs) + 1/4 of conv2 (56,448); conv2 channel: 1/8 of
    # conv2 + 49/392 of fc1 (25,088, read through the flatten); fc1 neuron: 1/64 of fc1 and of fc2 (640)
    assert macs == pytest.approx({"conv1.weight:0": 7056 + 14112, "conv2.weight:0": 7056 + 3136,
                                  "fc1.weight:0": 392 + 10})
    params = channel_costs(model, graph, x, "params")
    assert params["conv1.weight:0"] == pytest.approx(9 + 1 + 72)  # its filter, its bias, conv2's column
    # removing one channel really saves about that many MACs (exact for a linear count)
    pruned = StructuredPruner({"ratio": 0.0}, options={"layer_channels": {"conv1": 1}}).fit_transform(model, x)
    assert count_macs(model, x) - count_macs(pruned, x) == pytest.approx(macs["conv1.weight:0"])


def test_params_cost_is_the_parameters_one_channel_removes() -> None:
    """Through BatchNorm: its weight and bias count, its running statistics (buffers) do not. Exact
    widths (round_to=1): measured layer timings must not decide whether the one channel is rounded away."""
    from prunekit.measure import count_params

    torch.manual_seed(0)
    model = models.create("resnet20")
    x = models.example_input("resnet20")
    graph = DependencyGraph.trace(model, x)
    params = channel_costs(model, graph, x, "params")
    for layer in ("layer1.0.conv1", "layer3.2.conv1"):
        gid = next(g.id for g in graph.prunable if any(m.module == layer and m.role == "producer" for m in g.members))
        pruned = StructuredPruner({"ratio": 0.0}, round_to=1, options={"layer_channels": {layer: 1}}).fit_transform(model, x)
        assert count_params(model) - count_params(pruned) == pytest.approx(params[gid])


def test_weights_follow_time_per_mac_and_are_clipped(cnn, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    model, x, graph = cnn
    fake = {("conv1", 0): 8.0, ("conv2", 0): 6.0, ("fc1", 0): 0.001, ("fc2", 0): 0.001, ("relu1", 0): 1.0,
            ("pool1", 0): 2.0}
    monkeypatch.setattr(cost, "latency_by_call", lambda *a, **k: dict(fake))
    weights = latency_weights(model, graph, x)
    rate = sum(fake.values()) / 110_400  # the whole model's ms per MAC (relu1's and pool1's time included)
    # a group's modules: conv1's channels live in conv1 (28,224 MACs) and conv2 (56,448), and relu1
    # and pool1 carry them (their time is charged to conv1's group, which writes what they read)
    assert weights["conv1.weight:0"] == pytest.approx((8.0 + 6.0 + 1.0 + 2.0) / (28_224 + 56_448) / rate)
    assert weights["conv2.weight:0"] == pytest.approx((6.0 + 0.001) / (56_448 + 25_088) / rate)
    assert weights["conv1.weight:0"] > 1 > weights["conv2.weight:0"]
    assert weights["fc1.weight:0"] == cost.WEIGHT_RANGE[0]  # nearly free per MAC: clipped at 1/4


def test_weights_shape_local_and_global_allocation(cnn) -> None:  # type: ignore[no-untyped-def]
    model, _, graph = cnn
    scores = dict(score(graph, model, "l2"))
    plain = allocate(graph, scores, 0.5)
    weighted = allocate(graph, scores, 0.5, weights={"fc1.weight:0": 2.0, "conv2.weight:0": 0.5})
    assert len(plain.keep["fc1.weight:0"]) == 32
    assert len(weighted.keep["fc1.weight:0"]) == 64 - math.floor(64 * (1 - 0.25))  # keeps (1 - 0.5) ** 2
    assert len(weighted.keep["conv2.weight:0"]) == 8 - math.floor(8 * (1 - 0.5 ** 0.5))
    assert weighted.keep["conv1.weight:0"] == plain.keep["conv1.weight:0"]  # missing: weight 1
    capped = allocate(graph, scores, 0.9, weights={"fc1.weight:0": 4.0}, max_ratio=0.8, round_to=1)
    assert len(capped.keep["fc1.weight:0"]) == 64 - math.floor(64 * 0.8)
    flat = {gid: torch.ones_like(s) for gid, s in scores.items()}  # equal importance everywhere
    costly = allocate(graph, flat, 0.3, scope="global", weights={"fc1.weight:0": 4.0})
    assert len(costly.keep["conv1.weight:0"]) == 4 and len(costly.keep["conv2.weight:0"]) == 8
    assert len(costly.keep["fc1.weight:0"]) < 64


def test_fill_adds_back_the_channels_that_cost_least_per_score(cnn) -> None:  # type: ignore[no-untyped-def]
    model, x, graph = cnn
    flat = {gid: torch.ones(graph.group(gid).size) for gid in ("conv1.weight:0", "conv2.weight:0", "fc1.weight:0")}
    from prunekit.structured import Target, search

    plan, achieved = search(model, graph, flat, Target(macs=0.5), example_inputs=x, allocate_kwargs={"round_to": 1})
    bisected, _ = search(model, graph, flat, Target(macs=0.5), example_inputs=x,
                         allocate_kwargs={"round_to": 1}, fill=False)
    added = {gid: len(plan.keep[gid]) - len(bisected.keep[gid]) for gid in plan.keep}
    assert achieved["macs"] <= 0.5 and sum(added.values()) > 0
    # at equal scores the cheapest channels (fc1 neurons, 402 MACs) come back before a conv channel
    assert added["fc1.weight:0"] > 0 and added["conv1.weight:0"] == 0


def test_cost_latency_cuts_the_slow_layer_more(cnn, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    model, x, _ = cnn
    fake = {("conv1", 0): 0.05, ("conv2", 0): 0.05, ("fc1", 0): 5.0, ("fc2", 0): 0.01}
    monkeypatch.setattr(cost, "latency_by_call", lambda *a, **k: dict(fake))
    plain = StructuredPruner({"ratio": 0.25}).fit(model, x)
    aware = StructuredPruner({"ratio": 0.25}, options={"cost": "latency", "cost_batch_size": 4}).fit(model, x)
    assert len(aware.plan_.keep["fc1.weight:0"]) < len(plain.plan_.keep["fc1.weight:0"])
    assert aware.plan_.meta["pruner"]["options"]["cost"] == "latency"  # recorded in the plan
    with pytest.raises(ConfigError, match="cost"):
        StructuredPruner({"ratio": 0.25}, options={"cost": "time"}).fit(model, x)


def test_a_residual_add_is_charged_to_the_stream_it_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The functional add after a block's last BatchNorm counts towards the residual stream's group."""
    torch.manual_seed(0)
    model = models.create("resnet20")
    x = models.example_input("resnet20")
    graph = DependencyGraph.trace(model, x)
    real = cost.latency_by_call(model, x, repeats=1, functional=True)
    fake = {call: 1.0 for call in real}
    monkeypatch.setattr(cost, "latency_by_call", lambda *a, **k: dict(fake))
    before = latency_weights(model, graph, x)
    fake[("<add>", 0)] = 50.0  # layer1.0's residual add made slow
    after = latency_weights(model, graph, x)
    stream = next(g.id for g in graph.prunable if any(m.module == "layer1.0.bn2" for m in g.members))
    inner = next(g.id for g in graph.prunable if any(m.module == "layer1.0.bn1" for m in g.members))
    assert after[stream] > before[stream]
    assert after[inner] <= before[inner]  # only through the whole model's rate, which includes the add
