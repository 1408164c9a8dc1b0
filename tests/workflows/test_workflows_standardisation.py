"""A saved model reads other data standardised as its training data was: ``eval``/``prune``/``export``
of a saved folder on a new image folder (a few images of one class) must not standardise it with
that folder's own mean and std."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from prunekit.io import read_manifest
from prunekit.recover import TrainConfig
from prunekit.workflows.common import build
from prunekit.workflows.train import train

LEVELS = {"cat": (20, 40, 60), "dog": (120, 140, 160), "emu": (220, 200, 180)}


def _folder(root: Path, counts: dict[str, int]) -> Path:
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (28, 28), tuple(v + 3 * i for v in LEVELS[cls])).save(root / cls / f"{i}.png")
    return root


def _inputs(splits) -> torch.Tensor:  # type: ignore[no-untyped-def]
    return torch.cat([s.tensors[0] for s in (splits.train, splits.val, splits.test)])[:, :, 0, 0]


def test_new_images_are_standardised_with_the_training_statistics(tmp_path: Path) -> None:
    trained = _folder(tmp_path / "pets", {"cat": 6, "dog": 6, "emu": 6})
    fewer = _folder(tmp_path / "mostly_cats", {"cat": 5, "dog": 1, "emu": 1})  # NOTE: the same files, other stats
    train("simple_cnn", str(trained), TrainConfig(epochs=1, max_steps_per_epoch=1, batch_size=8),
          out_dir=tmp_path / "run", profile_after=False)
    manifest = read_manifest(tmp_path / "run" / "model")
    made_for = manifest.data
    assert set(manifest.metrics) == {"val", "test"} and "accuracy" in manifest.metrics["val"]
    assert made_for is not None and len(made_for["mean"]) == 3 and made_for["pixel_scale"] == 1 / 255
    _, seen = build(str(tmp_path / "run" / "model"), str(trained))
    _, new = build(str(tmp_path / "run" / "model"), str(fewer))
    assert new.mean == seen.mean and new.std == seen.std
    want = {tuple(round(v, 4) for v in row.tolist()) for row in _inputs(seen)}
    got = {tuple(round(v, 4) for v in row.tolist()) for row in _inputs(new)}
    assert got <= want  # NOTE: each image's inputs are those it had in the training folder
    _, own = build("simple_cnn", str(fewer))  # NOTE: a model without a record: the data's own statistics
    assert own.mean != seen.mean


def test_statistics_recorded_in_other_pixel_units_are_converted() -> None:
    """Fashion-MNIST records its statistics in 8-bit units (pixel_scale 1), an image folder in [0, 1]
    (pixel_scale 1/255): the same pixels end up with the same inputs either way; data not decoded from
    pixels is left alone against statistics that were."""
    from prunekit.data.custom import assemble

    pixels = torch.arange(0, 250, 10, dtype=torch.float32).reshape(25, 1, 1, 1)
    labels = torch.zeros(25, dtype=torch.long)
    folder = assemble("f", (pixels / 255, labels), (pixels[:2] / 255, labels[:2]), (pixels[:2] / 255, labels[:2]),
                      pixel_scale=1 / 255)
    as_fashion = folder.standardised_as((72.94,), (90.02,), 1.0)
    torch.testing.assert_close(as_fashion.train.tensors[0], (pixels - 72.94) / 90.02)
    assert as_fashion.mean == (72.94,) and as_fashion.pixel_scale == 1.0
    arrays = assemble("a", (pixels, labels), (pixels[:2], labels[:2]), (pixels[:2], labels[:2]))
    assert arrays.standardised_as((72.94,), (90.02,), 1.0) is arrays
    assert folder.standardised_as((0.5, 0.5, 0.5), (0.2, 0.2, 0.2), 1 / 255) is folder  # NOTE: 3 channels, not 1
