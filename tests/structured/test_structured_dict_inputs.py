"""A model whose forward takes one batch dict (``model(batch)``, ``batch["image"]``): the default
path prunes it, counts its MACs, times it in PyTorch and saves it; what needs tensors (ONNX) says so
in one line."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunekit
from prunekit.errors import ConfigError
from prunekit.measure import count_macs, measure_latency
from prunekit.measure.macs import batch_of
from prunekit.structured import StructuredPruner


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.image = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.meta = nn.Linear(4, 16)
        self.head = nn.Linear(48, 3)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(torch.cat([self.image(batch["image"]), F.relu(self.meta(batch["meta"]))], 1))


def _batch(n: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    return {"image": torch.randn(n, 3, 8, 8, generator=g), "meta": torch.randn(n, 4, generator=g)}


def test_a_dict_input_model_is_pruned_measured_and_saved(tmp_path) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = TwoInputs().eval()
    dense = count_macs(model, (_batch(),))
    assert dense == 2 * (8 * 8 * 32 * 27 + 16 * 4 + 3 * 48)
    pruned = StructuredPruner({"ratio": 0.5}).fit_transform(model, (_batch(),))  # verified
    assert pruned.image[0].out_channels == 16 and pruned.meta.out_features == 8
    assert count_macs(pruned, _batch()) < dense / 1.9  # NOTE: a dict alone is the one positional input
    assert pruned(_batch(5)).shape == (5, 3)
    loaded = prunekit.load(prunekit.save(pruned, tmp_path / "m", original=model), model=TwoInputs())
    torch.testing.assert_close(loaded(_batch(3)), pruned(_batch(3)))
    assert measure_latency(pruned, (_batch(),), batch_size=4, warmup=1, repeats=2, min_time_s=0).median_ms > 0


def test_batch_of_tiles_the_tensors_inside_a_dict() -> None:
    (tiled,) = batch_of((_batch(2),), 5)
    assert tiled["image"].shape == (5, 3, 8, 8) and tiled["meta"].shape == (5, 4)
    torch.testing.assert_close(tiled["meta"][2], tiled["meta"][0])


def test_what_needs_tensors_says_so_for_a_dict() -> None:
    from prunekit.measure.macs import as_inputs

    with pytest.raises(ConfigError, match="take tensors only.*Wrap the model"):
        as_inputs((_batch(),))
    with pytest.raises(ConfigError, match=r"example_inputs\[0\] is a dict holding no tensor"):
        count_macs(TwoInputs(), ({"image": 1},))


class ListOfImages(nn.Module):
    """A detector-style forward: a list of images, of which a data-dependent selection runs (so a
    shapes-only count on the meta device cannot run it)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 40, 3, padding=1), nn.ReLU(), nn.Conv2d(40, 40, 3, padding=1),
                                      nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(40, 3)

    def forward(self, images: list[torch.Tensor]) -> torch.Tensor:
        x = torch.stack(images)
        return self.head(self.features(x[x.flatten(1).abs().sum(1) > 0]))


def test_a_list_input_model_takes_the_default_rounding() -> None:
    """The default ``round_to="auto"`` reads layer shapes from one PyTorch forward when the meta count
    cannot run: that forward takes the list as it is (it asked for tensors, as ONNX does, and failed)."""
    torch.manual_seed(0)
    model = ListOfImages().eval()
    images = [torch.randn(3, 8, 8), torch.randn(3, 8, 8)]
    pruned = StructuredPruner({"ratio": 0.5}).fit_transform(model, (images,))
    assert pruned.features[0].out_channels in (20, 24, 32)
    assert pruned(images).shape == (2, 3)
