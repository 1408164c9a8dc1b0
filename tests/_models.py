"""Tiny fixture models shared by every test folder, one per graph pattern (named after the pattern).

Importable as ``_models`` from any test: the root conftest puts ``tests/`` on ``sys.path``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class Residual(nn.Module):
    """conv -> BN -> (+ identity) twice: the residual stream is one group."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.a = nn.Conv2d(8, 6, 3, padding=1)
        self.b = nn.Conv2d(6, 8, 3, padding=1)
        self.bn_b = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.stem(x)))
        x = F.relu(x + self.bn_b(self.b(F.relu(self.a(x)))))
        return self.head(x.mean((2, 3)))


class Concat(nn.Module):
    """Two branches concatenated, then a consumer: the consumer's columns split across groups."""

    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Conv2d(3, 5, 1)
        self.right = nn.Conv2d(3, 7, 3, padding=1)
        self.mix = nn.Conv2d(12, 6, 1)
        self.fc = nn.Linear(6 * 4 * 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([F.relu(self.left(x)), F.relu(self.right(x))], dim=1)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.mix(y), 4), 1))


class Chunked(nn.Module):
    """chunk(2) along channels: both halves are cut alike."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.conv(x).chunk(2, dim=1)
        return self.fc((a * torch.sigmoid(b)).mean((2, 3)))


class DepthwiseSE(nn.Module):
    """Inverted residual with depthwise conv and squeeze-and-excitation."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Conv2d(3, 12, 1)
        self.dw = nn.Conv2d(12, 12, 3, padding=1, groups=12)
        self.se1 = nn.Conv2d(12, 4, 1)
        self.se2 = nn.Conv2d(4, 12, 1)
        self.project = nn.Conv2d(12, 6, 1)
        self.prelu = nn.PReLU(6)
        self.fc = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.hardswish(self.dw(F.relu6(self.expand(x))))
        s = torch.sigmoid(self.se2(F.relu(self.se1(F.adaptive_avg_pool2d(h, 1)))))
        return self.fc(self.prelu(self.project(h * s)).amax((2, 3)))


class ChannelsLast(nn.Module):
    """ConvNeXt-style: permute to channels-last, LayerNorm + MLP, layer scale, permute back."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 2, stride=2)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.norm = nn.LayerNorm(8)
        self.up = nn.Linear(8, 16)
        self.down = nn.Linear(16, 8)
        self.gamma = nn.Parameter(torch.full((8,), 0.5))
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.gamma * self.down(F.gelu(self.up(self.norm(y))))
        x = x + y.permute(0, 3, 1, 2)
        return self.head(x.mean((2, 3)))


class TokensWithClassToken(nn.Module):
    """ViT-style tokens: class token and position embedding used directly as parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 4, stride=4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, 8))
        self.pos = nn.Parameter(torch.randn(1, 5, 8))
        self.fc1 = nn.Linear(8, 12)
        self.fc2 = nn.Linear(12, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), t], dim=1) + self.pos
        t = t + self.fc2(F.gelu(self.fc1(t)))
        return self.head(t[:, 0])


class Transposed1d3d(nn.Module):
    """Conv1d, ConvTranspose1d and a Conv3d in one model."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(2, 6, 3, padding=1)
        self.bn = nn.BatchNorm1d(6)
        self.up = nn.ConvTranspose1d(6, 5, 2, stride=2)
        self.c3 = nn.Conv3d(5, 4, 1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(F.relu(self.bn(self.c1(x))))
        return self.fc(self.c3(h[:, :, None, None, :]).mean((2, 3, 4)))


class EmbeddingMLP(nn.Module):
    """Embedding -> Linear: the embedding's columns are a prunable group."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.fc = nn.Linear(8, 6)
        self.out = nn.Linear(6, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.fc(self.emb(ids))).mean(1))


class ChannelShuffle(nn.Module):
    """view/transpose/view channel shuffle: the graph must not assume channels stay in place."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.b = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        n, c, h, w = y.shape
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.b(y).mean((2, 3))


class _Twice(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def, override]
        return torch.flip(x, dims=[1]) * 2

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def, override]
        return torch.flip(grad, dims=[1]) * 2


class CustomAutograd(nn.Module):
    """A custom autograd function that flips channels: never assumed to keep them in place."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 6, 1)
        self.b = nn.Conv2d(6, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(_Twice.apply(self.a(x))).mean((2, 3))


IMAGE = (2, 3, 16, 16)
PATTERNS = {
    "residual": (Residual, IMAGE), "concat": (Concat, IMAGE), "chunk": (Chunked, IMAGE),
    "depthwise_se": (DepthwiseSE, IMAGE), "channels_last": (ChannelsLast, IMAGE),
    "class_token": (TokensWithClassToken, (2, 3, 8, 8)), "conv1d_3d_transposed": (Transposed1d3d, (2, 2, 8)),
}
# The patterns the contract battery (export, ONNX, atomicity) runs over: one per handler family.
CONTRACT_PATTERNS = {name: PATTERNS[name] for name in
                     ("residual", "concat", "depthwise_se", "channels_last", "conv1d_3d_transposed")}


def example(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def two_conv_classifier() -> nn.Module:
    """Two 16-channel convs with BatchNorm and a 3-class head, on 1x8x8 inputs (see ``tiny_splits``)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3)).eval()


def tiny_splits(samples: int = 32) -> Any:
    """Random 1x8x8 images of 3 classes, the same set as train, val and test."""
    from torch.utils.data import TensorDataset

    from prunekit.data import DataSplits

    g = torch.Generator().manual_seed(0)
    part = TensorDataset(torch.randn(samples, 1, 8, 8, generator=g), torch.randint(0, 3, (samples,), generator=g))
    return DataSplits("tiny", part, part, part, num_classes=3, input_shape=(1, 8, 8))
