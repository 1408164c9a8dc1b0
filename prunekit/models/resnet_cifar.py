"""CIFAR-style ResNets (He et al. 2016, "Deep Residual Learning for Image Recognition", §4.2).

Three stages of ``n`` basic blocks with 16, 32 and 64 channels on 32x32 (or 28x28) inputs;
depth = 6n + 2 (resnet20: n = 3, resnet56: n = 9).
"""

from __future__ import annotations

import torch
from torch import nn

from prunekit.errors import ConfigError

__all__ = ["BasicBlock", "ResNetCifar", "resnet20", "resnet56"]

_WIDTHS = (16, 32, 64)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    The shortcut is the paper's option B: a 1x1 conv + BN when the stride or width changes,
    the identity otherwise.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, in, H, W]`` -> ``[N, out, H / stride, W / stride]``."""
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """ResNet for small images: 3x3 stem (16 ch), three stages (16/32/64 ch), global pool, linear.

    Shortcuts use option B (1x1 conv + BN projection where the shape changes, identity
    elsewhere) rather than the paper's CIFAR option A (strided identity zero-padded with extra
    channels). Option A hard-codes the channel layout of the residual, so structural pruning
    cannot remove channels of a stage; a projection is an ordinary conv that a dependency graph
    can slice like any other. It adds 2 convs: resnet20 has 19 3x3 convs + 2 1x1 projections
    + 1 linear, ~0.27M parameters.

    Convs get Kaiming-normal init (fan-out, ReLU) and BN starts at weight 1, bias 0, as in
    He et al. 2015 and torchvision's ResNet.

    Args:
        depth: 6n + 2 for n >= 1 (20, 32, 44, 56, 110, ...).
    """

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ConfigError(
                f"ResNetCifar: 'depth' must be 6n + 2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...); "
                f"got {depth!r}. Pick one of those, e.g. depth=20 (resnet20)."
            )
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, _WIDTHS[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(_WIDTHS[0])
        self.relu = nn.ReLU()
        channels = _WIDTHS[0]
        stages = []
        for index, width in enumerate(_WIDTHS):
            stride = 1 if index == 0 else 2
            stage = [BasicBlock(channels, width, stride)]
            stage += [BasicBlock(width, width) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            channels = width
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` -> ``[N, num_classes]`` logits (H, W of 28 or 32; any >= 4 works)."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.pool(x)))


def resnet20(num_classes: int = 10, in_channels: int = 1) -> ResNetCifar:
    """ResNet-20 (n = 3): ~0.27M parameters."""
    return ResNetCifar(20, num_classes=num_classes, in_channels=in_channels)


def resnet56(num_classes: int = 10, in_channels: int = 1) -> ResNetCifar:
    """ResNet-56 (n = 9): ~0.86M parameters."""
    return ResNetCifar(56, num_classes=num_classes, in_channels=in_channels)
