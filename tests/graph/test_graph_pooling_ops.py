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
