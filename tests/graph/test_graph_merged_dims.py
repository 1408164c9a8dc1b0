"""Dims merged into one where the channels are not the outermost: plain dims before the channels
repeat their layout (a channels-last patch merge, heads folded under the batch), plain dims after
them widen each channel. The next layer reads each channel at every copy, and is cut there."""

from __future__ import annotations

import torch
from torch import nn

from prunekit.graph import DependencyGraph
from prunekit.importance.magnitude import random
from prunekit.structured.allocate import allocate
from prunekit.structured.apply import apply, mask


class PatchMerge(nn.Module):
    """Swin's patch merging on ``[B, H, W, C]``: each 2x2 patch's four pixels side by side, so the
    reduction reads channel ``c`` at columns ``c``, ``C + c``, ``2C + c`` and ``3C + c``."""

    def __init__(self, side: int = 4) -> None:
        super().__init__()
        self.side = side
        self.inp, self.reduce, self.out = nn.Linear(6, 8), nn.Linear(32, 5), nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))  # [B, H, W, C]
        B, H, W, C = h.shape
        h = h.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.out(torch.relu(self.reduce(h))).mean((1, 2))


def test_a_channels_last_patch_merge_cuts_each_channel_at_every_copy() -> None:
    torch.manual_seed(0)
    model, x = PatchMerge().eval(), torch.randn(2, 4, 4, 6)
    graph = DependencyGraph.trace(model, x)
    group = next(g for g in graph.groups if ("inp.weight", 0) in {(m.tensor, m.axis) for m in g.members})
    assert group.prunable and group.size == 8, group.reasons
    assert sorted(m.start for m in group.members if m.tensor == "reduce.weight") == [0, 8, 16, 24]
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=x)
    torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)
    assert pruned.inp.out_features == 4 and pruned.reduce.in_features == 16


class FlattenAll(nn.Module):
    """A whole channels-last map flattened into a classifier: one copy per pixel (here 48 x 48)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.out = nn.Linear(6, 4), nn.Linear(48 * 48 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.inp(x)).flatten(1))


def test_a_merge_of_more_than_1024_copies_freezes_the_channels() -> None:
    graph = DependencyGraph.trace(FlattenAll().eval(), torch.randn(1, 48, 48, 6))
    group = next(g for g in graph.groups if ("inp.weight", 0) in {(m.tensor, m.axis) for m in g.members})
    assert not group.prunable and any("mixed with other dims" in r for r in group.reasons), group.reasons


class ConstantMerge(PatchMerge):
    """The patch merge viewed to a literal width (``reshape(B, H/2, W/2, 32)``, as SegFormer's
    classifier views to ``config.hidden_sizes[-1]``): the literal would not follow the cut."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        B, H, W, C = h.shape
        h = h.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 2, 4, 5).reshape(B, H // 2, W // 2, 32)
        return self.out(torch.relu(self.reduce(h))).mean((1, 2))


def test_a_merge_to_a_literal_size_freezes_the_channels() -> None:
    model, x = ConstantMerge().eval(), torch.randn(2, 4, 4, 6)
    graph = DependencyGraph.trace(model, x)
    group = next(g for g in graph.groups if ("inp.weight", 0) in {(m.tensor, m.axis) for m in g.members})
    assert not group.prunable and any("constant size 32" in r for r in group.reasons), group.reasons
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=x)
    torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)
