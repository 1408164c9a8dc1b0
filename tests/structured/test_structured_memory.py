"""Pruning's memory: slicing makes no copy larger than the tensor it returns (issue 19: ResNet-50's
peak under 1.3x of the model, benchmarks/scale.py). Allocations are counted by a dispatch mode, not
by resident memory, so the bound is exact."""

from __future__ import annotations

import torch
from torch import nn

from _allocations import LargestNew
from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.structured import allocate, apply


def test_a_weight_cut_on_two_axes_is_gathered_once() -> None:
    """The middle Linear loses half its rows and half its columns: the result (256 x 256) is made in
    one gather; an index_select per axis first made a 256 x 512 copy, freed memory that the
    allocator kept."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 8)).eval()
    x = torch.randn(2, 8)
    graph = DependencyGraph.trace(model, x)
    plan = allocate(graph, score(graph, model, "l2"), 0.5)
    with LargestNew() as seen:
        pruned = apply(model, graph, plan, example_inputs=x, verify_result=False)
    assert pruned[2].weight.shape == (256, 256)
    assert seen.most == 256 * 256, seen.most
    with torch.no_grad():
        kept = [sorted(set(range(512)) - set(plan.removed(g.id))) for g in graph.prunable]
        assert torch.equal(pruned[2].weight, model[2].weight[kept[1]][:, kept[0]])
