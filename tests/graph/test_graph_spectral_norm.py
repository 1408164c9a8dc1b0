"""Spectral normalisation: the power-iteration vectors ``_u`` and ``_v`` are cut with the weight's
rows and columns, so the scale of the pruned weight is the masked weight's and the cut is exact."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from prunekit.graph import DependencyGraph
from prunekit.importance.magnitude import random
from prunekit.structured import StructuredPruner
from prunekit.structured.allocate import allocate
from prunekit.structured.apply import apply, mask


class Discriminator(nn.Module):
    """A GAN discriminator: strided convs and a linear layer, all spectral-normed."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = spectral_norm(nn.Conv2d(3, 16, 4, 2, 1)), spectral_norm(nn.Conv2d(16, 32, 4, 2, 1))
        self.fc = spectral_norm(nn.Linear(32, 24))
        self.out = nn.Linear(24, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.c2(F.leaky_relu(self.c1(x), 0.2)), 0.2).mean((2, 3))
        return self.out(F.leaky_relu(self.fc(h), 0.2))


class Generator(nn.Module):
    """Transposed convs (spectral norm over their dim 1, the output channels), then a conv."""

    def __init__(self) -> None:
        super().__init__()
        self.up1 = spectral_norm(nn.ConvTranspose2d(8, 16, 4, 2, 1), dim=1)
        self.up2 = spectral_norm(nn.ConvTranspose2d(16, 12, 4, 2, 1), dim=1)
        self.rgb = nn.Conv2d(12, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.rgb(F.relu(self.up2(F.relu(self.up1(z))))))


def _example(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _trained_vectors(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """A few power iterations in training mode, so ``u`` and ``v`` are not their random start."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x)
    return model.eval()


def test_power_iteration_vectors_join_the_groups() -> None:
    graph = DependencyGraph.trace(Discriminator().eval(), _example((1, 3, 16, 16)))
    (group,) = [g for g in graph.groups if ("c1.bias", 0) in {(m.tensor, m.axis) for m in g.members}]
    members = {(m.tensor, m.start, m.inner) for m in group.members}
    assert ("c1.parametrizations.weight.0._u", 0, 1) in members
    assert ("c2.parametrizations.weight.0._v", 0, 16) in members  # NOTE: 4 x 4 kernel positions per channel


@pytest.mark.parametrize(("factory", "shape"), [(Discriminator, (2, 3, 16, 16)), (Generator, (2, 8, 4, 4))])
@pytest.mark.parametrize("seed", [0, 1])
def test_pruned_equals_masked_dense(factory: type[nn.Module], shape: tuple[int, ...], seed: int) -> None:
    x = _example(shape)
    model = _trained_vectors(factory(), x)
    graph = DependencyGraph.trace(model, x)
    plan = allocate(graph, {g.id: random(g, model, seed=seed) for g in graph.prunable}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=x, verify_result=True)
    torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)


def test_default_path_cuts_and_keeps_training() -> None:
    x = _example((2, 3, 16, 16))
    model = _trained_vectors(Discriminator(), x)
    pruned = StructuredPruner({"ratio": 0.5}).fit_transform(model, x)
    assert pruned.c2.parametrizations.weight.original.shape[:2] == (16, 8)
    assert pruned.c2.parametrizations.weight[0]._v.shape == (8 * 16,)
    pruned.train()
    pruned(x).sum().backward()  # NOTE: the power iteration runs on the sliced vectors
    assert pruned.c1.parametrizations.weight.original.grad is not None
