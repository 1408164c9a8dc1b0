"""Sizes read from tensors (``B, N, D = x.shape``) and used to reshape other data tie the widths."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.structured import allocate, apply
from prunekit.structured.apply import mask


class HiddenWidth(nn.Module):
    """MaxViT's pattern: the inner width is reshaped back to the *input's* width ``D``."""

    def __init__(self, width: int = 8, inner: int = 8) -> None:
        super().__init__()
        self.inp = nn.Linear(4, width)
        self.v = nn.Linear(width, inner)
        self.merge = nn.Linear(inner, width)
        self.out = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)                       # [B, N, width]
        b, n, d = h.shape
        y = self.v(h).reshape(b * n, -1)      # inner width flattened with the batch
        y = y.reshape(b, n, d)                # ... and read back with the input's width D
        return self.out(self.merge(y) + h)    # the residual ties merge's output to h, not v's


class WidthIntoRows(nn.Module):
    """A width used for a dim the channels do not occupy: those channels must stay."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)                        # [B, 6]
        b, d = h.shape
        rows = torch.ones(d * b, 1).reshape(d, b)  # a tensor whose rows count follows the width d
        return self.head(h) + rows.sum() * 0


def _x() -> torch.Tensor:
    return torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(0))


def test_width_read_from_a_shape_ties_the_groups() -> None:
    model = HiddenWidth().eval()
    graph = DependencyGraph.trace(model, _x())
    tied = [g for g in graph.groups if {"inp.weight", "v.weight"} <= {m.tensor for m in g.members}]
    assert len(tied) == 1 and tied[0].prunable, graph.summary()
    plan = allocate(graph, score(graph, model, "l2"), 0.5)
    assert plan.ratio > 0
    pruned = apply(model, graph, plan, example_inputs=_x())  # verifies against the masked model
    torch.testing.assert_close(pruned(_x()), mask(model, graph, plan)(_x()), rtol=1e-4, atol=1e-5)
    assert pruned.v.out_features == pruned.inp.out_features < 8


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_width_used_for_other_data_is_frozen(ratio: float) -> None:
    model = WidthIntoRows().eval()
    x = torch.randn(3, 4)
    graph = DependencyGraph.trace(model, x)
    frozen = [g for g in graph.groups if "inp.weight" in {m.tensor for m in g.members}]
    assert frozen and not any(g.prunable for g in frozen)
    assert any("read from a shape" in r for g in frozen for r in g.reasons)
    plan = allocate(graph, score(graph, model, "l2"), ratio)
    assert apply(model, graph, plan, example_inputs=x)(x).shape == (3, 2)
