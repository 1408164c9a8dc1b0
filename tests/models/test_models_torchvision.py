"""torchvision models: any class count and input channels, and pretrained weights read offline only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import GoogLeNet_Weights, ResNet18_Weights, get_model

from prunekit import models
from prunekit.errors import DataError, DataNotFoundError, UnknownNameError
from prunekit.io import save_weights
from prunekit.models.torchvision_models import (
    adapt_conv_weight,
    hub_cache_path,
    load_compatible,
)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "squeezenet1_0", "efficientnet_b0"])
def test_grayscale_ten_class_forward(name: str) -> None:
    model = models.create(name, in_channels=1, num_classes=10).eval()
    with torch.no_grad():
        out = model(models.example_input(name, in_channels=1))
    assert out.shape == (1, 10)


def test_first_conv_is_replaced_in_place_generically() -> None:
    model = models.create("mobilenet_v3_small", in_channels=4)
    conv = model.features[0][0]
    assert isinstance(conv, nn.Conv2d) and conv.in_channels == 4 and conv.stride == (2, 2)
    assert models.create("resnet18").conv1.in_channels == 3


def test_inception_returns_a_plain_tensor_in_training_mode() -> None:
    model = models.create("googlenet", in_channels=1).train()
    out = model(torch.randn(2, 1, 64, 64))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)


@pytest.fixture
def hub_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the torch hub cache at ``tmp_path``; returns the checkpoints folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    if Path(torch.hub.get_dir()) != tmp_path / "hub":  # NOTE: torch.hub.set_dir() beats TORCH_HOME.
        monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    assert Path(torch.hub.get_dir()) == tmp_path / "hub"
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


def test_pretrained_weights_load_from_the_hub_cache(hub_dir: Path) -> None:
    saved = get_model("resnet18", weights=None).state_dict()  # 1000 classes, 3 channels
    path = hub_cache_path(ResNet18_Weights.IMAGENET1K_V1)
    assert path == hub_dir / "resnet18-f37072fd.pth"
    torch.save(saved, path)
    model = models.create("resnet18", weights="IMAGENET1K_V1", num_classes=10, in_channels=1)
    state = model.state_dict()
    body = [k for k in saved if not k.startswith(("fc.", "conv1."))]
    assert all(torch.equal(state[k], saved[k]) for k in body)
    # NOTE: grayscale = the RGB filters summed over channels (the image replicated to 3 channels).
    assert torch.allclose(state["conv1.weight"], saved["conv1.weight"].sum(1, keepdim=True))
    assert state["fc.weight"].shape == (10, 512)
    same = models.create("resnet18", weights=ResNet18_Weights.DEFAULT, num_classes=1000)
    assert all(torch.equal(same.state_dict()[k], v) for k, v in saved.items())


def test_missing_cache_file_says_where_to_put_it(hub_dir: Path) -> None:
    with pytest.raises(DataNotFoundError) as info:
        models.create("resnet18", weights="DEFAULT")
    message = str(info.value)
    assert str(hub_dir / "resnet18-f37072fd.pth") in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message


def test_unknown_weights_name_suggests(hub_dir: Path) -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'IMAGENET1K_V1'"):
        models.create("resnet18", weights="IMAGENET1K_V2")


def test_local_files_of_either_format(tmp_path: Path) -> None:
    source = models.create("squeezenet1_1", num_classes=4, in_channels=1)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    save_weights(source, tmp_path / "w.safetensors")
    for file in ("w.pth", "w.safetensors"):
        loaded = models.create("squeezenet1_1", num_classes=4, in_channels=1, weights=tmp_path / file)
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in source.state_dict().items())
    with pytest.raises(DataError, match="features.0.weight"):
        models.create("squeezenet1_0", num_classes=4, in_channels=1, weights=tmp_path / "w.pth")
    with pytest.raises(DataNotFoundError):
        models.create("squeezenet1_1", weights=tmp_path / "none.pth")


def test_googlenet_checkpoint_with_aux_heads_loads(hub_dir: Path) -> None:
    # NOTE: real checkpoints carry the aux classifiers; with aux_logits=False they are dropped.
    saved = get_model("googlenet", weights=None, aux_logits=True, init_weights=False).state_dict()
    torch.save(saved, hub_cache_path(GoogLeNet_Weights.IMAGENET1K_V1))
    model = models.create("googlenet", weights="DEFAULT", num_classes=1000)
    assert model.aux1 is None and model.transform_input
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items() if not k.startswith("aux"))


def test_state_without_version_metadata_loads_into_mnasnet() -> None:
    # NOTE: MNASNet refuses a state dict with no version; safetensors files carry none.
    source = models.create("mnasnet0_5", num_classes=3)
    target = models.create("mnasnet0_5", num_classes=3)
    assert load_compatible(target, dict(source.state_dict()), source="test", num_classes=3) == []
    assert all(torch.equal(target.state_dict()[k], v) for k, v in source.state_dict().items())


def test_unexpected_tensors_are_errors_but_dropped_aux_heads_are_not() -> None:
    model = models.create("googlenet", num_classes=3)
    state = dict(model.state_dict())
    load_compatible(model, {**state, "aux1.fc2.weight": torch.zeros(1)}, source="file", num_classes=3)
    with pytest.raises(DataError, match="unexpected \\['extra.weight'\\]"):
        load_compatible(model, {**state, "extra.weight": torch.zeros(1)}, source="file", num_classes=3)
    with pytest.raises(DataError, match="missing \\['fc.bias'\\]"):
        load_compatible(model, {k: v for k, v in state.items() if k != "fc.bias"}, source="f", num_classes=3)


def test_adapt_conv_weight_keeps_the_response_scale() -> None:
    weight = torch.randn(8, 3, 3, 3)
    assert torch.allclose(adapt_conv_weight(weight, 1, pretrained=True), weight.sum(1, keepdim=True))
    six = adapt_conv_weight(weight, 6, pretrained=True)
    assert six.shape == (8, 6, 3, 3) and torch.allclose(six.sum(1), weight.sum(1))
    assert torch.equal(adapt_conv_weight(weight, 2, pretrained=False), weight[:, :2])


@pytest.mark.slow
@pytest.mark.parametrize("name", models.names(source="torchvision"))
def test_every_torchvision_model_runs(name: str) -> None:
    model = models.create(name, num_classes=10).eval()
    with torch.no_grad():
        out = model(models.example_input(name))
    assert out.shape == (1, 10)
    assert torch.isfinite(out).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", models.names(source="torchvision"))
def test_every_torchvision_model_takes_imagenet_weights_for_grayscale(name: str) -> None:
    """A 1000-class RGB state loads into a 10-class grayscale model: all but the head."""
    aux = {"aux_logits": True, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    saved = get_model(name, weights=None, **aux).state_dict()
    model = models.create(name, num_classes=10, in_channels=1)
    skipped = load_compatible(model, saved, source=name, num_classes=10)
    # NOTE: the head's weight and bias (maxvit's head has no bias).
    assert len({k.rpartition(".")[0] for k in skipped}) == 1 and 1 <= len(skipped) <= 2
    assert all(saved[k].shape[0] == 1000 for k in skipped)
    model.eval()
    with torch.no_grad():
        assert model(models.example_input(name, in_channels=1)).shape == (1, 10)


def test_static_table_matches_torchvision() -> None:
    """The zoo lists torchvision's models from a static table (no import); it must match torchvision."""
    import torchvision
    from torchvision.models import list_models

    from prunekit.models.torchvision_models import default_input_size
    from prunekit.models.torchvision_names import INPUT_SIZES

    names = list_models(module=torchvision.models)
    assert sorted(INPUT_SIZES) == sorted(names)
    assert {n: default_input_size(n) for n in names} == INPUT_SIZES
