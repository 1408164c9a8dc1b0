"""The small 28x28 models: shapes, exact sizes and the layer names later stages rely on."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit import models
from prunekit.errors import ConfigError
from prunekit.models import LeNet5, SimpleCNN, VGGSmall


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", models.names(source="prunekit"))
def test_every_prunekit_model_maps_a_batch_to_logits(name: str) -> None:
    model = models.create(name).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", models.names(source="prunekit"))
def test_every_prunekit_model_takes_three_channels(name: str) -> None:
    model = models.create(name, in_channels=3, num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 28, 28)).shape == (2, 7)


def test_simple_cnn_matches_the_source_document() -> None:
    model = SimpleCNN()
    assert _params(model) == 26_138
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert list(layers) == ["conv1", "conv2", "fc1", "fc2"]
    assert (model.conv1.in_channels, model.conv1.out_channels, model.conv1.kernel_size) == (1, 4, (3, 3))
    assert (model.conv2.in_channels, model.conv2.out_channels) == (4, 8)
    assert (model.fc1.in_features, model.fc1.out_features) == (392, 64)
    assert (model.fc2.in_features, model.fc2.out_features) == (64, 10)


def test_simple_cnn_macs_are_110_400() -> None:
    # NOTE: counted by hand here so the number does not depend on prunekit.measure.
    model, macs = SimpleCNN(), 0

    def count(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal macs
        macs += output[0].numel() * (module.weight[0].numel())

    for layer in (model.conv1, model.conv2, model.fc1, model.fc2):
        layer.register_forward_hook(count)
    model(torch.randn(1, 1, 28, 28))
    assert macs == 110_400


def test_lenet5_has_the_classic_layout() -> None:
    model = LeNet5()
    assert _params(model) == 61_706
    assert model.fc1.in_features == 400 and model.fc2.out_features == 84


def test_vgg_small_stages_follow_widths() -> None:
    model = VGGSmall(widths=(8, 16))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 8, 16, 16]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 4
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert models.create("vgg_small", widths=(8,))(torch.randn(1, 1, 28, 28)).shape == (1, 10)


@pytest.mark.parametrize("widths", [(), (8, 0), (8, 2.5)])
def test_vgg_small_rejects_bad_widths(widths: tuple) -> None:
    with pytest.raises(ConfigError, match="widths"):
        VGGSmall(widths=widths)
