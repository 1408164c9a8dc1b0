"""Parametrized weights other than weight and spectral norm: where the parametrization maps each
entry alone (softplus for positive weights) the layer is cut like any other; where it mixes entries
(``orthogonal``, a symmetric matrix) the layer's channels are kept, with the reason, up front."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torch.nn.utils.parametrize as parametrize
from torch import nn

from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.structured import allocate, apply
from prunekit.structured.apply import mask


class Positive(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(x)


class Symmetric(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.triu() + x.triu(1).transpose(-1, -2)


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))


def _groups_of(graph: DependencyGraph, layer: str) -> list:  # type: ignore[type-arg]
    return [g for g in graph.groups if any(m.module == layer for m in g.members)]


@pytest.mark.parametrize("make,name", [(lambda: nn.utils.parametrizations.orthogonal, "Orthogonal"),
                                       (lambda: lambda m: parametrize.register_parametrization(m, "weight",
                                                                                               Symmetric()),
                                        "Symmetric")])
def test_a_mixing_parametrization_keeps_its_layer(make, name: str) -> None:  # type: ignore[no-untyped-def]
    model = _mlp()
    make()(model[2])
    graph = DependencyGraph.trace(model.eval(), torch.randn(2, 20))
    touching = _groups_of(graph, "2")
    assert touching and not any(g.prunable for g in touching)
    assert any(f"parametrization {name}, which mixes its entries" in r for g in touching for r in g.reasons)


def test_an_entrywise_parametrization_is_cut_and_equals_the_masked_model() -> None:
    model = _mlp()
    parametrize.register_parametrization(model[2], "weight", Positive())
    x = torch.randn(3, 20)
    graph = DependencyGraph.trace(model.eval(), x)
    assert all(g.prunable for g in _groups_of(graph, "2") if g.id != "4.weight:0")
    plan = allocate(graph, score(graph, model, "l2"), 0.5, round_to=1)
    pruned = apply(model, graph, plan, example_inputs=x)
    assert pruned[2].weight.shape == (16, 16)
    torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)
