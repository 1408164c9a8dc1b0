"""Tiny synthetic data and models for the training-loop tests (seconds, not minutes, on 2 cores)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from prunekit.data.base import DataSplits


def quadrant_splits(n_train: int = 256, n_val: int = 64, n_test: int = 64, *, seed: int = 0,
                    noise: float = 0.5) -> DataSplits:
    """4 classes of 1x8x8 images: class k is brighter in quadrant k (separable after pooling)."""
    generator = torch.Generator().manual_seed(seed)

    def make(n: int) -> TensorDataset:
        labels = torch.randint(0, 4, (n,), generator=generator)
        images = noise * torch.randn(n, 1, 8, 8, generator=generator)
        for k in range(4):
            rows, cols = divmod(k, 2)
            images[labels == k, :, rows * 4:(rows + 1) * 4, cols * 4:(cols + 1) * 4] += 1.0
        return TensorDataset(images, labels)

    return DataSplits(name="quadrants", train=make(n_train), val=make(n_val), test=make(n_test),
                      num_classes=4, input_shape=(1, 8, 8), class_names=("a", "b", "c", "d"))


class TinyNet(nn.Module):
    """Conv -> BatchNorm -> ReLU -> 2x2 pool -> Dropout -> Linear: buffers and dropout included."""

    def __init__(self, num_classes: int = 4, width: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(width * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.bn(self.conv(x))))
        return self.fc(self.drop(x.flatten(1)))


def tiny_net(seed: int = 0) -> TinyNet:
    """A TinyNet with weights fixed by ``seed`` (without touching the global RNG)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyNet()


def state_equal(a: nn.Module | dict, b: nn.Module | dict) -> bool:
    """True when two state dicts hold bit-identical tensors under the same names."""
    sa = a.state_dict() if isinstance(a, nn.Module) else a
    sb = b.state_dict() if isinstance(b, nn.Module) else b
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class DictImages(Dataset):
    """Hugging Face-style samples: {"x", "labels", "index"} ("index" is not a model input)."""

    def __init__(self, data: TensorDataset) -> None:
        self.x, self.y = data.tensors

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"x": self.x[i], "labels": self.y[i], "index": i}
