"""Beyond classifiers: data-dependent post-processing that may produce only empty tensors, and a
conv whose weight is computed (standardised) rather than a parameter."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.graph import DependencyGraph
from prunekit.structured import StructuredPruner


class _Detector(nn.Module):
    """A backbone, a score head, then post-processing that keeps the scores above a threshold and
    concatenates the kept ones (empty when none passes, as a random detector's often are)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.head(self.backbone(x)).sigmoid().flatten()
        kept = [s[s > 2.0] for s in scores.split(8)]  # nothing passes: every part is empty
        return scores, torch.cat(kept, dim=0)


def test_post_processing_on_empty_tensors_traces_and_the_backbone_is_pruned() -> None:
    model, x = _Detector().eval(), torch.randn(1, 3, 4, 4)
    graph = DependencyGraph.trace(model, x)
    assert graph.group("backbone.0.weight:0").prunable
    pruned = StructuredPruner({"ratio": 0.5}).fit_transform(model, x)
    assert pruned.backbone[0].out_channels == 4 and pruned.head.out_channels == 2


def test_a_computed_conv_weight_traces_and_freezes_its_input() -> None:
    """NF-Net's ScaledStdConv2d standardises its weight in the forward: the conv's weight is not a
    parameter, so its input channels are frozen (the trace crashed on it before)."""
    timm = pytest.importorskip("timm")
    model = nn.Sequential(nn.Conv2d(3, 8, 1), timm.layers.ScaledStdConv2d(8, 4, 3)).eval()
    group = DependencyGraph.trace(model, torch.randn(1, 3, 6, 6)).group("0.weight:0")
    assert not group.prunable and any("conv weight is not a parameter" in r for r in group.reasons)
