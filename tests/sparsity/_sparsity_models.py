"""Tiny models for the sparsity tests: every Linear/Conv input dim is a multiple of 8."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from prunekit.data.base import DataSplits


class ConvMLP(nn.Module):
    """conv(2->8, 2x2) -> flatten -> linear(32->16) -> linear(16->4): 3 sparsifiable layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 8, 2, bias=False)  # in * k * k = 8
        self.fc1 = nn.Linear(32, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x))  # [N, 8, 2, 2]
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class HeadFirst(nn.Module):
    """The classifier ``head`` is declared first; ``fc`` (declared last) feeds it."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(16, 4)
        self.conv = nn.Conv2d(2, 8, 2)
        self.fc = nn.Linear(32, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc(torch.relu(self.conv(x)).flatten(1))))


def conv_mlp(seed: int = 0) -> ConvMLP:
    """A ConvMLP with weights fixed by ``seed``, leaving the global RNG alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ConvMLP()


def batch(seed: int = 1, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``[n, 2, 3, 3]`` and labels in 0..3."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 3, 3, generator=generator), torch.randint(0, 4, (n,), generator=generator)


def splits(n_train: int = 256, n_eval: int = 64, seed: int = 0) -> DataSplits:
    """4 classes of ``[2, 3, 3]`` inputs: class k adds +1 to channel k // 2 at row k % 2 (learnable)."""
    from torch.utils.data import TensorDataset

    from prunekit.data.base import DataSplits

    generator = torch.Generator().manual_seed(seed)

    def make(n: int) -> TensorDataset:
        labels = torch.randint(0, 4, (n,), generator=generator)
        inputs = 0.5 * torch.randn(n, 2, 3, 3, generator=generator)
        for k in range(4):
            inputs[labels == k, k // 2, k % 2] += 1.0
        return TensorDataset(inputs, labels)

    return DataSplits(name="rows", train=make(n_train), val=make(n_eval), test=make(n_eval),
                      num_classes=4, input_shape=(2, 3, 3), class_names=("a", "b", "c", "d"))
