"""CIFAR ResNets: depth 6n+2, option-B shortcuts, paper-sized parameter counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit import models
from prunekit.errors import ConfigError
from prunekit.models import ResNetCifar
from prunekit.models.resnet_cifar import BasicBlock


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_resnet20_has_paper_size_and_layers() -> None:
    model = models.create("resnet20")
    assert _params(model) == pytest.approx(270_000, rel=0.02)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    # NOTE: 19 3x3 convs + 1 fc carry the depth of 20; option B adds two 1x1 projections.
    assert sum(c.kernel_size == (3, 3) for c in convs) == 19
    assert sum(c.kernel_size == (1, 1) for c in convs) == 2
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 1


def test_resnet56_has_nine_blocks_per_stage() -> None:
    model = models.create("resnet56")
    assert [len(stage) for stage in (model.layer1, model.layer2, model.layer3)] == [9, 9, 9]
    assert sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in model.modules()) == 55


def test_shortcuts_are_projections_only_where_the_shape_changes() -> None:
    model = ResNetCifar(20)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    projections = [b for b in blocks if not isinstance(b.shortcut, nn.Identity)]
    assert [b.conv1.stride for b in projections] == [(2, 2), (2, 2)]
    assert [b.shortcut[0].out_channels for b in projections] == [32, 64]


@pytest.mark.parametrize("size", [28, 32])
def test_resnet_cifar_works_for_28_and_32_pixel_inputs(size: int) -> None:
    model = ResNetCifar(8, num_classes=5, in_channels=3).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, 5)


@pytest.mark.parametrize("depth", [21, 2, 0, 19.0])
def test_depth_must_be_6n_plus_2(depth: object) -> None:
    with pytest.raises(ConfigError, match="6n \\+ 2"):
        ResNetCifar(depth)  # type: ignore[arg-type]
