"""Zoo coverage: torchvision classifiers trace, prune by half, verify, and keep their output shape.

A fast subset runs by default (64x64 inputs); every torchvision model runs under ``slow``.
``benchmarks/coverage.py`` runs the same checks plus ONNX export and writes COVERAGE.md.
"""

from __future__ import annotations

import gc

import pytest
import torch

import prunekit.models
from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.structured import allocate, apply

FAST = ("resnet18", "mobilenet_v3_small", "squeezenet1_1", "shufflenet_v2_x0_5", "regnet_x_400mf",
        "efficientnet_b0")


def _check(name: str, shape: tuple[int, ...], *, unblocked: bool = False) -> None:
    torch.manual_seed(0)
    model = prunekit.models.create(name, num_classes=10).eval()
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(x).shape
    graph = DependencyGraph.trace(model, x)
    assert graph.prunable, graph.summary()
    assert not (unblocked and graph.blocked), graph.blocked
    plan = allocate(graph, score(graph, model, "l2"), 0.5)
    pruned = apply(model, graph, plan, example_inputs=x)  # raises unless pruned == masked dense
    with torch.no_grad():
        assert pruned(x).shape == want
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    del model, pruned, graph
    gc.collect()


@pytest.mark.parametrize("name", FAST)
def test_zoo_subset_prunes_by_half(name: str) -> None:
    """Residuals, depthwise + SE, fire concat, channel shuffle, grouped convs: no op blocks pruning."""
    _check(name, (3, 64, 64), unblocked=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", prunekit.models.names(source="torchvision"))
def test_zoo_every_model_prunes_by_half(name: str) -> None:
    _check(name, prunekit.models.input_shape(name))
