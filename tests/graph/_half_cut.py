"""The cut most graph tests check: half of every prunable group at exact widths, verified by ``apply``
and compared with the masked dense model."""

from __future__ import annotations

import torch
from torch import nn

from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.structured import allocate, apply
from prunekit.structured.apply import mask


def cut_half(model: nn.Module, x: torch.Tensor) -> tuple[DependencyGraph, nn.Module]:
    """``model`` (in eval mode) traced on ``x`` and cut in half by L2 scores; the graph and the pruned
    model, whose output on ``x`` equals the masked dense model's."""
    model.eval()
    graph = DependencyGraph.trace(model, x)
    plan = allocate(graph, score(graph, model, "l2"), 0.5, round_to=1)
    pruned = apply(model, graph, plan, example_inputs=x)
    torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)
    return graph, pruned
