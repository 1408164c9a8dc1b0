"""Ops that pool each channel on its own let the channels through: torchvision's roi_align and
roi_pool (detection heads), max_unpool (SegNet-style decoders). Without a rule they froze every
channel they touched (Faster R-CNN's FPN kept whole; a SegNet not cut at all)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunekit.structured import StructuredPruner
from prunekit.structured.apply import mask

torchvision = pytest.importorskip("torchvision")


class RoIHead(nn.Module):
    def __init__(self, op: str) -> None:
        super().__init__()
        self.op = op
        self.backbone = nn.Conv2d(3, 16, 3, padding=1)
        self.head = nn.Conv2d(16, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4, 5)

    def forward(self, x: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor:
        features = F.relu(self.backbone(x))
        pool = torchvision.ops.roi_align if self.op == "roi_align" else torchvision.ops.roi_pool
        regions = F.relu(self.head(pool(features, boxes, output_size=(4, 4), spatial_scale=1.0)))
        return self.fc(F.adaptive_avg_pool2d(regions, 2).flatten(1))


class Unpooling(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encode, self.decode = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled, where = F.max_pool2d(F.relu(self.encode(x)), 2, return_indices=True)
        return self.decode(F.max_unpool2d(pooled, where, 2))


@pytest.mark.parametrize("model, inputs", [
    (lambda: RoIHead("roi_align"), lambda: (torch.randn(2, 3, 16, 16), [torch.tensor([[0., 0., 8., 8.], [2., 3., 12., 14.]]),
                                                                          torch.tensor([[1., 1., 15., 15.]])])),
    (lambda: RoIHead("roi_pool"), lambda: (torch.randn(2, 3, 16, 16), [torch.tensor([[0., 0., 8., 8.]]),
                                                                         torch.tensor([[1., 1., 15., 15.]])])),
    (Unpooling, lambda: (torch.randn(2, 3, 16, 16),)),
], ids=["roi_align", "roi_pool", "max_unpool2d"])
def test_channels_pooled_one_by_one_are_cut_exactly(model, inputs) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    net, x = model().eval(), inputs()
    pruner = StructuredPruner({"ratio": 0.5}, round_to=1).fit(net, x)
    small = pruner.transform(net)
    first = small.backbone if isinstance(net, RoIHead) else small.encode
    assert first.out_channels == 8
    torch.testing.assert_close(small(*x), mask(net, pruner.graph_, pruner.plan_)(*x), rtol=1e-4, atol=1e-5)


class LevelsByRow(nn.Module):
    """MultiScaleRoIAlign's pattern: a zero tensor of (RoIs, channels, h, w), each level's RoIs
    written into it by row index."""

    def __init__(self) -> None:
        super().__init__()
        self.fine, self.coarse = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.head = nn.Conv2d(16, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = [F.relu(self.fine(x)), F.relu(self.coarse(x))]
        pooled = [F.adaptive_avg_pool2d(f, 4) for f in levels]
        result = torch.zeros((4, levels[0].shape[1], 4, 4), dtype=x.dtype)
        result[torch.tensor([0, 2])] = pooled[0]
        result[torch.tensor([1, 3])] = pooled[1]
        return self.head(result)


class RowsOfChannels(nn.Module):
    """Rows of a [channels, ...] tensor written by index: those are channel positions, kept whole."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv(x))[0]
        y[torch.tensor([1, 5])] = 0.0
        return self.head(y[None])


def test_rows_written_by_index_keep_the_other_dims_whole() -> None:
    torch.manual_seed(0)
    net, x = LevelsByRow().eval(), torch.randn(2, 3, 16, 16)
    pruner = StructuredPruner({"ratio": 0.5}, round_to=1).fit(net, x)
    small = pruner.transform(net)
    assert small.fine.out_channels == small.coarse.out_channels == 8
    torch.testing.assert_close(small(x), mask(net, pruner.graph_, pruner.plan_)(x), rtol=1e-4, atol=1e-5)
    with pytest.warns(UserWarning, match="nothing in RowsOfChannels can be cut"):
        graph = StructuredPruner({"ratio": 0.5}, round_to=1).fit(RowsOfChannels().eval(), torch.randn(1, 3, 8, 8)).graph_
    assert not graph.prunable
    assert any("in-place write at constant channel positions" in r for g in graph.groups for r in g.reasons)
