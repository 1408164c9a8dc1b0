"""Sizes timm models and blocks store as lists or beside their layers follow the cut: CrossViT's
per-branch ``embed_dim`` (``reset_classifier`` builds each head from it), EdgeNeXt's per-scale
``width``; and a prunable group of one unit says in the summary why it cannot shrink."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.graph import DependencyGraph
from prunekit.structured import StructuredPruner

timm = pytest.importorskip("timm")

torch.set_num_threads(1)


def _x(size: int) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))


def _pruned(model: nn.Module, x: torch.Tensor) -> nn.Module:
    torch.manual_seed(0)
    return StructuredPruner({"ratio": 0.5}, round_to=1).fit_transform(model.eval(), x).eval()


def test_a_per_branch_embed_dim_follows_the_heads_it_builds() -> None:
    torch.manual_seed(0)
    model = timm.create_model(
        "crossvit_tiny_240",
        pretrained=False,
        num_classes=10,
        img_size=48,
        img_scale=(1.0, 1.0),
        embed_dim=(16, 32),
        depth=((1, 1, 0),),
        num_heads=(2, 2),
        mlp_ratio=(1.0, 1.0, 1.0),
    )
    x = _x(48)
    pruned = _pruned(model, x)
    widths = [head.in_features for head in pruned.head]
    assert widths == [16 // 2, 32 // 2]
    assert list(pruned.embed_dim) == widths and pruned.num_features == sum(widths)
    pruned.reset_classifier(5)
    with torch.no_grad():
        assert pruned(x).shape == (2, 5)


def test_a_split_blocks_scale_width_follows_its_convs() -> None:
    torch.manual_seed(0)
    model = timm.create_model(
        "edgenext_xx_small",
        pretrained=False,
        num_classes=10,
        dims=(24, 48, 88, 168),
        depths=(1, 2, 1, 1),
        heads=(4, 4, 4, 4),
    )
    before = [m.width for m in model.modules() if type(m).__name__ == "SplitTransposeBlock"]
    pruned = _pruned(model, _x(64))
    blocks = [m for m in pruned.modules() if type(m).__name__ == "SplitTransposeBlock"]
    assert [block.width for block in blocks] == [block.convs[0].out_channels for block in blocks]
    assert sum(block.width for block in blocks) < sum(before)


class _Attention(nn.Module):
    """Heads of 32 channels whose output is reshaped to the input width (NextViT's attention)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.heads = width // 32
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, 32).permute(2, 0, 3, 1, 4)
        out = (q @ k.transpose(-2, -1) * 32**-0.5).softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class _GroupedAndHeads(nn.Module):
    """A stream read by a conv in groups of 32 channels and by attention with heads of 32."""

    def __init__(self, width: int = 128) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.grouped = nn.Conv2d(width, width, 3, padding=1, groups=width // 32)
        self.attn = _Attention(width)
        self.fc = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.grouped(x)
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        x = (t + self.attn(t)).transpose(1, 2).reshape(b, c, h, w)
        return self.fc(x.mean((2, 3)))


def test_the_summary_says_why_a_prunable_group_of_one_unit_cannot_shrink() -> None:
    graph = DependencyGraph.trace(_GroupedAndHeads().eval(), torch.randn(2, 3, 8, 8))
    stream = next(g for g in graph.groups if any(m.tensor == "stem.weight" for m in g.members))
    assert stream.prunable and stream.size == 1
    line = next(line for line in graph.summary().splitlines() if line.startswith(stream.id))
    assert "cannot shrink: one unit of all 128 channels" in line
    assert "4 slices of 32" in line
