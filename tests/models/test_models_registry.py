"""The zoo's public functions: names, input shapes, example inputs, validation, local weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prunekit import models
from prunekit.errors import ConfigError, DataError, DataNotFoundError, UnknownNameError
from prunekit.io import save_weights


def test_all_names_exist() -> None:
    for name in models.__all__:
        assert hasattr(models, name), name


def test_prunekit_entries_and_their_meta() -> None:
    assert models.names(source="prunekit") == ["lenet5", "resnet20", "resnet56", "simple_cnn", "vgg_small"]
    assert models.input_shape("simple_cnn") == (1, 28, 28)
    assert models.input_shape("resnet20", in_channels=3) == (3, 28, 28)
    assert models.names("resnet*", source="prunekit") == ["resnet20", "resnet56"]


def test_torchvision_names_are_all_registered() -> None:
    names = models.names(source="torchvision")
    assert len(names) > 70
    assert {"resnet50", "vit_b_16", "convnext_tiny", "swin_t"} <= set(names)


@pytest.mark.parametrize(("name", "size"), [("resnet18", 224), ("inception_v3", 299),
                                            ("efficientnet_b3", 300), ("swin_v2_t", 256),
                                            ("vit_h_14", 224), ("maxvit_t", 224)])
def test_torchvision_input_shapes(name: str, size: int) -> None:
    assert models.input_shape(name) == (3, size, size)
    assert models.input_shape(name, in_channels=1) == (1, size, size)


def test_example_input_is_deterministic_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = models.example_input("simple_cnn", batch_size=4)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert a.shape == (4, 1, 28, 28)
    assert torch.equal(a, models.example_input("simple_cnn", batch_size=4))
    assert models.example_input("resnet18", in_channels=1).shape == (1, 1, 224, 224)


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'resnet20'.*prunekit models"):
        models.create("resnt20")
    with pytest.raises(UnknownNameError):
        models.input_shape("nope")
    assert "vgg_small" in models.MODELS and models.create("vgg-small") is not None


@pytest.mark.parametrize(("kwargs", "field"), [({"num_classes": 0}, "num_classes"),
                                               ({"in_channels": 0}, "in_channels"),
                                               ({"num_classes": True}, "num_classes"),
                                               ({"in_channels": 1.5}, "in_channels")])
def test_bad_sizes_are_config_errors(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=f"'{field}' must be a positive integer; got .*Pass"):
        models.create("simple_cnn", **kwargs)


def test_unknown_constructor_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="does not accept"):
        models.create("simple_cnn", width=3)
    with pytest.raises(ConfigError, match="rejected the options"):
        models.create("squeezenet1_1", bogus=1)


def test_safetensors_weights_round_trip(tmp_path: Path) -> None:
    source = models.create("simple_cnn", num_classes=5)
    path = save_weights(source, tmp_path / "model.safetensors")
    loaded = models.create("simple_cnn", num_classes=5, weights=path)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with pytest.raises(DataError, match="shape"):
        models.create("simple_cnn", num_classes=10, weights=path)
    with pytest.raises(DataNotFoundError, match="missing.safetensors"):
        models.create("simple_cnn", weights=tmp_path / "missing.safetensors")
