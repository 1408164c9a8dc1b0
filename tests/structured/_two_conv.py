"""The two-conv network the rounding tests prune: 32 and 64 channels, so half the MACs keeps
widths (22 and 46 exact) that are not multiples of 8, and rounding them changes the MACs."""

from __future__ import annotations

import torch
from torch import nn

X = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))


class TwoConv(nn.Module):
    """32 and 64 channels: 'auto' rounding to 8/16 used to keep 0.377 of the MACs for a 0.5 target."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.conv2(torch.relu(self.conv1(x))))).flatten(1))
