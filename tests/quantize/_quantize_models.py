"""Tiny models and data for the quantisation tests."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset


class TinyCNN(nn.Module):
    """Conv-BN-ReLU twice, then a linear classifier over every position: 8x8 greyscale inputs,
    4 classes (no pooling, no bias: its predictions vary with the input)."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Flatten())
        self.fc = nn.Linear(width * 64, 4, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def tiny_cnn(seed: int = 0) -> TinyCNN:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyCNN().eval()


def labelled_by(model: nn.Module, count: int = 128, seed: int = 0) -> TensorDataset:
    """Random 8x8 inputs labelled by ``model``'s own argmax (its fp32 accuracy is exactly 1)."""
    x = torch.randn(count, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return TensorDataset(x, model(x).argmax(1))


def with_outlier(model: TinyCNN, scale: float = 300.0) -> TinyCNN:
    """``model`` with one channel of the first block's output ``scale`` times larger (and read
    ``scale`` times weaker), so the float function is the same but one shared int8 range has to cover
    both: the second convolution's inputs lose their resolution."""
    bn, conv = model.features[1], model.features[3]
    with torch.no_grad():
        bn.weight[0] *= scale
        bn.bias[0] *= scale
        conv.weight[:, 0] /= scale
    return model
