"""``ignore`` keeps a module's outputs (a classifier's input width may still shrink, as in
Torch-Pruning); ``freeze`` keeps everything the module touches."""

from __future__ import annotations

import torch
from torch import nn

from prunekit.graph import DependencyGraph
from prunekit.structured import StructuredPruner


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        return self.fc(y.mean((2, 3)))


def _x() -> torch.Tensor:
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def test_ignoring_the_classifier_lets_the_last_stage_shrink() -> None:
    model, x = SmallCNN().eval(), _x()
    pruned = StructuredPruner({"ratio": 0.5}, round_to=1, ignore=["fc"]).fit_transform(model, x)
    assert pruned.fc.out_features == 5
    assert pruned.fc.in_features == pruned.conv2.out_channels == 8  # before: 16, the whole stage frozen
    assert pruned(x).shape == (2, 5)


def test_ignoring_a_norm_keeps_the_channels_it_acts_on() -> None:
    graph = DependencyGraph.trace(SmallCNN().eval(), _x(), ignore=["bn2"])
    assert not graph.group("conv2.weight:0").prunable
    assert "ignored: bn2 (its outputs are kept)" in graph.group("conv2.weight:0").reasons
    assert graph.group("conv1.weight:0").prunable


def test_freeze_keeps_the_inputs_too() -> None:
    model, x = SmallCNN().eval(), _x()
    pruner = StructuredPruner({"ratio": 0.5}, round_to=1, freeze=["fc"])
    pruned = pruner.fit_transform(model, x)
    assert pruned.fc.in_features == pruned.conv2.out_channels == 16
    assert pruned.conv1.out_channels == 4
    assert "frozen: fc" in pruner.graph_.group("conv2.weight:0").reasons
    assert StructuredPruner(**pruner.get_params()) == pruner
