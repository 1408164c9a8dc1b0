"""The invariant on real architectures: pruned == dense with the removed channels masked out.

Random ratios, seeds and scopes (hypothesis) on the families the issue names: ResNet, DenseNet,
MobileNetV2/V3, EfficientNet, RegNet, SqueezeNet, GoogLeNet and Inception. Attention heads and MLP
neurons of ViT, Swin and BERT are covered the same way in test_graph_attention.py. The graph is
traced once per model; each example draws a new plan.
"""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import prunekit.models
from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.structured import allocate, apply
from prunekit.structured.apply import mask

# name -> input side (the smallest each architecture accepts comfortably)
ZOO = {"resnet18": 32, "densenet121": 32, "mobilenet_v2": 32, "mobilenet_v3_small": 32,
       "efficientnet_b0": 32, "regnet_y_400mf": 32, "squeezenet1_1": 48, "googlenet": 32,
       "inception_v3": 75}
SLOW = {"densenet121", "inception_v3"}


@functools.cache
def _traced(name: str) -> tuple[torch.nn.Module, torch.Tensor, DependencyGraph]:
    torch.manual_seed(0)
    model = prunekit.models.create(name, num_classes=7).eval()
    x = torch.randn(2, 3, ZOO[name], ZOO[name], generator=torch.Generator().manual_seed(1))
    return model, x, DependencyGraph.trace(model, x)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in ZOO])
@settings(max_examples=3, deadline=None)
@given(ratio=st.floats(0.05, 0.85), seed=st.integers(0, 10_000), scope=st.sampled_from(["local", "global"]))
def test_pruned_equals_masked_dense(name: str, ratio: float, seed: int, scope: str) -> None:
    model, x, graph = _traced(name)
    assert all(g.exact for g in graph.prunable), f"{name}: a CNN group mixes channels"
    plan = allocate(graph, score(graph, model, "random", seed=seed), ratio, scope=scope)
    pruned = apply(model, graph, plan, example_inputs=x, verify_result=False)
    with torch.no_grad():
        got, want = pruned(x), mask(model, graph, plan)(x)
    assert got.shape == want.shape == (2, 7)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    if plan.ratio > 0:
        assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
