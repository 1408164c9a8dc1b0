"""torchvision's recorded output widths follow a cut: ``BackboneWithFPN.out_channels`` (what a
detector's heads are built from) and its conv blocks' ``out_channels``, where every output they count
is one group of channels; otherwise they are left out of the graph."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import prunekit
from prunekit.graph import DependencyGraph
from prunekit.structured import StructuredPruner, Target

torchvision = pytest.importorskip("torchvision")
from torchvision.models.detection.backbone_utils import BackboneWithFPN  # noqa: E402
from torchvision.ops.feature_pyramid_network import LastLevelP6P7  # noqa: E402


def _faster_rcnn() -> nn.Module:
    return torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=64, max_size=80).eval()


def test_a_pruned_faster_rcnn_backbone_reports_the_width_of_its_fpn(tmp_path: Path) -> None:
    """An RPN head built from ``backbone.out_channels``, as torchvision's own builders do, reads the
    pruned FPN; the saved result loads with the same width."""
    from torchvision.models.detection.rpn import RPNHead

    torch.manual_seed(0)
    model = _faster_rcnn()
    x = torch.randn(3, 64, 80, generator=torch.Generator().manual_seed(0))
    small = StructuredPruner(Target(ratio=0.5), round_to=1).fit_transform(model, ([x],)).eval()
    with torch.no_grad():
        levels = {k: v.shape[1] for k, v in small.backbone(x[None]).items()}
    assert small.backbone.out_channels == 128 and set(levels.values()) == {128}
    blocks = [m for m in small.modules() if type(m).__name__ in ("Conv2dNormActivation", "InvertedResidual")]
    assert all(m.out_channels == [c for c in m.modules() if isinstance(c, nn.Conv2d)][-1].out_channels
               for m in blocks)
    assert prunekit.load(prunekit.save(small, tmp_path / "m", original=model), model=_faster_rcnn()
                         ).backbone.out_channels == 128
    small.rpn.head = RPNHead(small.backbone.out_channels, small.rpn.anchor_generator.num_anchors_per_location()[0])
    with torch.no_grad():
        assert len(small([x])) == 1


class _Detector(nn.Module):
    """A two-level FPN with RetinaNet's P6 and P7 over a tiny backbone, read by one head shared by
    every level (its levels are then one group) or by a head per level."""

    def __init__(self, shared: bool) -> None:
        super().__init__()
        body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.Conv2d(8, 16, 3, 2, 1))
        self.backbone = BackboneWithFPN(body, {"0": "0", "1": "1"}, [8, 16], 32, extra_blocks=LastLevelP6P7(32, 32))
        self.heads = nn.ModuleList([nn.Conv2d(32, 4, 1) for _ in range(1 if shared else 4)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        levels = self.backbone(x).values()
        return tuple(self.heads[i % len(self.heads)](f).mean((2, 3)) for i, f in enumerate(levels))


@pytest.mark.parametrize("shared", [True, False])
def test_fpn_width_joins_its_levels_only_where_they_are_one_group(shared: bool) -> None:
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    graph = DependencyGraph.trace(_Detector(shared).eval(), x)
    holders = [g for g in graph.groups if any(a.tensor == "@backbone|out_channels|" for a in g.attrs)]
    outputs = {f"backbone.fpn.{c}.weight" for c in ("layer_blocks.0.0", "layer_blocks.1.0", "extra_blocks.p6",
                                                     "extra_blocks.p7")}
    assert [outputs <= {m.tensor for m in g.by_role("producer")} for g in holders] == ([True] if shared else [])
    if shared:
        small = StructuredPruner(Target(ratio=0.5), round_to=1).fit_transform(_Detector(True).eval(), x)
        assert small.backbone.out_channels == 16 == small.heads[0].in_channels
