"""Tiny models and calibration data for the importance tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.graph import DependencyGraph


class ConvNet(nn.Module):
    """conv1 -> BN -> ReLU -> conv2 -> ReLU -> mean -> fc: one group with BN (6), one without (4)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return self.fc(x.mean((2, 3)))


class MLP(nn.Module):
    """fc1 -> ReLU -> fc2: one group of 10 hidden neurons."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 10)
        self.fc2 = nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class Residual(nn.Module):
    """Two BN'd convs added: the residual stream is one group with two producers and two BNs,
    plus a flatten into the head (one channel = 4 features) and a dropout (train/eval differ)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.a = nn.Conv2d(8, 5, 1)
        self.b = nn.Conv2d(5, 8, 1)
        self.bn_b = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(8 * 2 * 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.stem(x)))
        x = F.relu(x + self.bn_b(self.b(F.relu(self.a(x)))))
        return self.head(self.drop(torch.flatten(F.adaptive_avg_pool2d(x, 2), 1)))


MODELS = {"convnet": (ConvNet, (3, 8, 8)), "mlp": (MLP, (8,)), "residual": (Residual, (3, 8, 8))}


def build(name: str, seed: int = 0) -> tuple[nn.Module, DependencyGraph, list[tuple[torch.Tensor, torch.Tensor]]]:
    """A seeded model, its graph, and three (inputs, labels) calibration batches of 4."""
    factory, shape = MODELS[name]
    torch.manual_seed(seed)
    model = factory()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # NOTE: non-trivial gammas and running stats
            nn.init.uniform_(m.weight, 0.2, 1.5)
            nn.init.normal_(m.running_mean, 0.0, 0.1)
    g = torch.Generator().manual_seed(seed)
    batches = [(torch.randn(4, *shape, generator=g), torch.randint(0, 3, (4,), generator=g)) for _ in range(3)]
    return model, DependencyGraph.trace(model, batches[0][0]), batches
