"""Weight-normalised layers (``weight = g * v / ||v||``: EnCodec, DAC, HiFi-GAN-style vocoders, WaveNet).

The weight is computed in the forward from two parameters, so the conv rule saw no parameter and
froze every channel it read or wrote (EnCodec kept 100 % of its parameters at ratio 0.5). Now the
computed weight has ``v``'s axes and ``g`` follows ``v`` along the norm axis: cutting that axis is
exact (each row's norm is its own); cutting another axis rescales the kept rows, so it is inexact
and verification checks the values. The masked reference zeroes a row through ``g`` (a zero ``v``
row has no direction: 0/0).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, weight_norm

import prunekit
from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.structured import allocate, apply
from prunekit.structured.apply import mask

X = torch.randn(2, 3, 16, generator=torch.Generator().manual_seed(0))


class Vocoder(nn.Module):
    """Two weight-normed convs and a weight-normed transposed conv (normalised over its input
    channels' rows, axis 0), then a plain conv; ``legacy`` uses the hook-based ``weight_norm``."""

    def __init__(self, legacy: bool = False) -> None:
        super().__init__()
        norm = weight_norm if legacy else parametrizations.weight_norm
        self.a = norm(nn.Conv1d(3, 8, 3, padding=1))
        self.b = norm(nn.Conv1d(8, 8, 3, padding=1))
        self.c = norm(nn.ConvTranspose1d(8, 6, 4, stride=2, padding=1))
        self.d = nn.Conv1d(6, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.d(torch.relu(self.c(torch.relu(self.b(torch.relu(self.a(x)))))))


def _group(graph: DependencyGraph, layer: str):  # type: ignore[no-untyped-def]
    """The group of ``layer``'s output channels (its bias)."""
    return next(g for g in graph.groups if (f"{layer}.bias", 0) in {(m.tensor, m.axis) for m in g.members})


@pytest.mark.parametrize("legacy", [False, True], ids=["parametrizations", "hook"])
def test_weight_normed_layers_are_cut_exactly_along_the_norm_axis(legacy: bool) -> None:
    """``b``'s outputs are its weight's norm rows and ``c``'s input rows (a transposed conv's norm
    axis): an exact group, with both scales ``g``; the pruned model equals the masked one."""
    torch.manual_seed(0)
    model = Vocoder(legacy).eval()
    graph = DependencyGraph.trace(model, X)
    group = _group(graph, "b")
    assert group.prunable and group.exact, group.reasons
    scale = "parametrizations.weight.original0" if not legacy else "weight_g"
    assert {(f"b.{scale}", 0), (f"c.{scale}", 0)} <= {(m.tensor, m.axis) for m in group.members}
    plan = allocate(graph, {group.id: score(graph, model, "l2")[group.id]}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=X)  # verified
    assert pruned.b.weight.shape == (4, 8, 3) and pruned.c.weight.shape == (4, 6, 4)
    # NOTE: the widths the layers record, from the sliced g and v (the hook's weight is stale until a forward)
    assert (pruned.b.out_channels, pruned.c.in_channels) == (4, 4)
    with torch.no_grad():
        torch.testing.assert_close(pruned(X), mask(model, graph, plan)(X), rtol=1e-4, atol=1e-5)


def test_cutting_an_axis_the_norm_sums_over_is_inexact_and_verified(tmp_path: Path) -> None:
    """``a``'s outputs are ``b``'s input columns, over which ``b``'s norm sums: inexact, with the
    reason; every group cut by half is still verified, and the folder loads back."""
    torch.manual_seed(0)
    model = Vocoder().eval()
    graph = DependencyGraph.trace(model, X)
    group = _group(graph, "a")
    assert group.prunable and not group.exact
    assert "b" in graph.mixing
    plan = allocate(graph, score(graph, model, "l2"), 0.5)
    pruned = apply(model, graph, plan, example_inputs=X)  # verified by value where it can
    assert [tuple(pruned.get_submodule(n).weight.shape) for n in "abc"] == [(4, 3, 3), (4, 4, 3), (4, 3, 4)]
    prunekit.save(pruned, tmp_path / "m", original=model)
    loaded = prunekit.load(tmp_path / "m", model=Vocoder())
    with torch.no_grad():
        torch.testing.assert_close(loaded(X), pruned(X))
