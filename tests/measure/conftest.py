"""Tiny models for the measure tests, written here so they do not depend on prunekit.models."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class SimpleCNN(nn.Module):
    """conv 1->4 3x3, relu, pool 2, conv 4->8 3x3, relu, pool 2, fc 392->64, fc 64->10.

    On 1x1x28x28: 28*28*4*9 + 14*14*8*36 + 392*64 + 64*10 = 110,400 MACs; 26,138 parameters.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.fc1 = nn.Linear(392, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(self.features(x).flatten(1))))


class BranchesOnData(nn.Module):
    """Runs in eager mode, but torch.export cannot trace its data-dependent `if`."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.fc(x)
        return -self.fc(x)


@pytest.fixture
def simple_cnn() -> SimpleCNN:
    torch.manual_seed(0)
    return SimpleCNN()


@pytest.fixture
def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


@pytest.fixture
def branches_on_data() -> BranchesOnData:
    torch.manual_seed(0)
    return BranchesOnData()
