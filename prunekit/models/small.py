"""Small networks for 28x28 inputs (Fashion-MNIST, MNIST): fast enough to train and prune on a CPU.

Each takes ``num_classes`` and ``in_channels`` and maps ``[N, in_channels, 28, 28]`` to
``[N, num_classes]`` logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from prunekit.errors import ConfigError

__all__ = ["LeNet5", "SimpleCNN", "VGGSmall"]


class SimpleCNN(nn.Module):
    """Two conv layers and two linear layers; the network of the project's source document.

    For ``1x28x28`` inputs and 10 classes it has 26,138 parameters and 110,400 MACs. ``fc1``
    reads the ``8x7x7`` map, so the input must be 28x28 (later stages refer to ``conv1`` etc.
    by name, so the attribute names are part of the contract).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(8 * 7 * 7, 64)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, 28, 28]`` -> ``[N, num_classes]`` logits."""
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc2(self.relu3(self.fc1(self.flatten(x))))


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) for 28x28 inputs, with ReLU and max-pooling.

    ``conv1`` pads by 2 so a 28x28 input gives the original 32x32 geometry: 6@28x28 -> pool ->
    16@10x10 -> pool -> 16@5x5 = 400 features -> 120 -> 84 -> ``num_classes``.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(120, 84)
        self.relu4 = nn.ReLU()
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, 28, 28]`` -> ``[N, num_classes]`` logits."""
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.relu3(self.fc1(self.flatten(x)))
        return self.fc3(self.relu4(self.fc2(x)))


class VGGSmall(nn.Module):
    """A small VGG: per stage two 3x3 conv-BN-ReLU and a 2x2 max-pool; global pool; linear head.

    With the default widths ``(32, 64, 128)`` a 28x28 input is pooled to 3x3 before the global
    average pool, so any input of at least ``2 ** len(widths)`` pixels works. Convs feed BatchNorm,
    so they carry no bias (the BN shift replaces it).

    Args:
        widths: output channels of each stage; one stage per entry.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1,
                 widths: Sequence[int] = (32, 64, 128)) -> None:
        super().__init__()
        widths = tuple(widths)
        if not widths or not all(isinstance(w, int) and w >= 1 for w in widths):
            raise ConfigError(f"VGGSmall: 'widths' must be a non-empty sequence of positive ints; got "
                              f"{widths!r}. Pass e.g. widths=(32, 64, 128).")
        layers: list[nn.Module] = []
        channels = in_channels
        for width in widths:
            for _ in range(2):
                layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False),
                           nn.BatchNorm2d(width), nn.ReLU()]
                channels = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` -> ``[N, num_classes]`` logits."""
        return self.classifier(self.flatten(self.pool(self.features(x))))
