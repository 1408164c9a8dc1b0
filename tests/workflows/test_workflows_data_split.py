"""How every command splits a user's file or folder: the same train/val/test split whatever ``--seed``
the run had (recorded in the saved folder as ``split_seed``), so ``eval --model OUT`` scores the very
test samples the training run held out; empty splits that nothing uses are fine, a needed one is a
one-line error; NaN inputs are named as the file numbers its rows."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prunekit.data import DataSplits
from prunekit.data.custom import assemble, split_three
from prunekit.errors import DataError
from prunekit.io import MANIFEST_FILE, read_manifest
from prunekit.recover import TrainConfig
from prunekit.workflows.common import build, check_finite, save_result
from prunekit.workflows.evaluate import evaluate
from prunekit.workflows.train import fine_tune, train

QUICK = TrainConfig(epochs=1, batch_size=8, seed=5, lr=0.05)


@pytest.fixture()
def spec(tmp_path: Path) -> str:
    """A user's tiny classifier in a ``.py`` file, for images and for feature rows alike."""
    file = tmp_path / "tiny.py"
    file.write_text(textwrap.dedent('''
        from torch import nn

        class Net(nn.Module):
            def __init__(self, num_classes: int, in_channels: int) -> None:
                super().__init__()
                self.head = nn.Linear(in_channels, num_classes)

            def forward(self, x):
                return self.head(x.flatten(2).mean(2) if x.dim() > 2 else x)

        def build(num_classes: int = 3, in_channels: int = 1) -> nn.Module:
            return Net(num_classes, in_channels)
    '''))
    return f"{file}:build"


def _image_folder(root: Path, per_class: int = 10) -> str:
    rng = np.random.default_rng(0)
    for c in range(3):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(root / f"c{c}" / f"{i}.png")
    return str(root)


def _npz(path: Path, layout: str, rows: int = 40) -> str:
    rng = np.random.default_rng(1)
    x, y = rng.random((rows, 5)).astype("float32"), rng.integers(0, 3, rows)
    if layout == "x,y":
        np.savez(path, x=x, y=y)
    else:  # NOTE: val is held out of x_train
        np.savez(path, x_train=x, y_train=y, x_test=x[:6], y_test=y[:6])
    return str(path)


@pytest.mark.parametrize("kind", ["image folder", "x,y", "x_train"])
def test_eval_of_a_run_with_another_seed_scores_its_own_test_samples(tmp_path: Path, spec: str, kind: str) -> None:
    data = _image_folder(tmp_path / "flat") if kind == "image folder" else _npz(tmp_path / "d.npz", kind)
    run = train(spec, data, QUICK, out_dir=tmp_path / "run", profile_after=False)
    scored = evaluate(str(tmp_path / "run"), data)
    assert scored["split"] == "test" and scored["metrics"]["count"] == run["train"]["test"]["count"]
    assert scored["metrics"] == pytest.approx(run["train"]["test"], abs=1e-6)
    _, trained_on = build(spec, data, seed=5)
    _, later = build(str(tmp_path / "run"), data)
    _, other_seed = build(spec, data, seed=6)
    for split in ("train", "val", "test"):
        mine, again = getattr(trained_on, split).tensors, getattr(later, split).tensors
        assert torch.allclose(mine[0], again[0], atol=1e-5) and torch.equal(mine[1], again[1])
        assert torch.equal(getattr(other_seed, split).tensors[0], mine[0])
    assert read_manifest(tmp_path / "run" / "model").data["split_seed"] == 0


def _trained_with_split_seed(tmp_path: Path, spec: str, seed: int) -> tuple[str, Path, dict]:
    """``(data, manifest file, manifest)`` of a run trained on an .npz of x, y, its manifest then
    made to record ``seed`` as the split seed."""
    data = _npz(tmp_path / "d.npz", "x,y")
    train(spec, data, QUICK, out_dir=tmp_path / "run", profile_after=False)
    manifest_file = tmp_path / "run" / "model" / MANIFEST_FILE
    manifest = json.loads(manifest_file.read_text())
    manifest["data"]["split_seed"] = seed
    manifest_file.write_text(json.dumps(manifest))
    return data, manifest_file, manifest


def test_a_recorded_split_seed_is_honoured_and_passed_on(tmp_path: Path, spec: str) -> None:
    data, manifest_file, manifest = _trained_with_split_seed(tmp_path, spec, 3)
    net, splits = build(str(tmp_path / "run"), data)
    _, _, test = split_three(40, 0.1, 0.2, 3)
    x = torch.from_numpy(np.load(data)["x"])
    assert torch.allclose(splits.test.tensors[0], (x[test] - torch.tensor(splits.mean)) / torch.tensor(splits.std),
                          atol=1e-5)
    save_result(net, tmp_path / "again", str(tmp_path / "run"), splits=splits)
    assert read_manifest(tmp_path / "again" / "model").data["split_seed"] == 3
    manifest["data"]["split_seed"] = "three"
    manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"split_seed 'three'; expected a whole number >= 0") as caught:
        build(str(tmp_path / "run"), data)
    assert "\n" not in str(caught.value)


def test_text_blocks_are_still_shuffled_by_the_run_seed(tmp_path: Path) -> None:
    file = tmp_path / "lm.py"
    file.write_text("from torch import nn\n\ndef build() -> nn.Module:\n"
                    "    return nn.Sequential(nn.Embedding(256, 4), nn.Linear(4, 256))\n")
    text = tmp_path / "corpus.txt"
    text.write_text("".join(f"line {i} of a small corpus to cut into blocks\n" for i in range(40)))

    def first_batch(seed: int) -> torch.Tensor:
        _, loaders = build(f"{file}:build", str(text), tokenizer="bytes", block_size=16, seed=seed)
        return next(iter(loaders.train))["input_ids"]

    assert torch.equal(first_batch(5), first_batch(5)) and not torch.equal(first_batch(5), first_batch(6))


def _tiny_npz(path: Path) -> str:
    """Four training rows: the val share (10 %) rounds to no sample."""
    rng = np.random.default_rng(2)
    np.savez(path, x_train=rng.random((4, 1, 4, 4)).astype("float32"), y_train=np.array([0, 1, 0, 1]),
             x_test=rng.random((4, 1, 4, 4)).astype("float32"), y_test=np.array([0, 1, 0, 1]))
    return str(path)


def test_an_empty_split_nothing_uses_is_fine_and_a_needed_one_is_named(tmp_path: Path, spec: str) -> None:
    data = _tiny_npz(tmp_path / "small.npz")
    _, splits = build(spec, data)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (4, 0, 4)
    assert evaluate(spec, data)["metrics"]["count"] == 4
    with pytest.raises(DataError, match=r"its val split is empty \(4 train, 0 val, 4 test samples\); eval --split "
                                        r"val needs it\. Pass --split test\.") as caught:
        evaluate(spec, data, split="val")
    assert "\n" not in str(caught.value)
    net, _ = build(spec, data)
    with pytest.raises(DataError, match=r"its val split is empty .* training needs it\. Fix: pass more samples"):
        fine_tune(net, splits, QUICK)


def test_a_saved_dataset_with_train_and_validation_only_is_scored_on_validation(tmp_path: Path, spec: str) -> None:
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(3)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})

    def part(n: int) -> object:
        images = [Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)) for _ in range(n)]
        return datasets.Dataset.from_dict({"image": images, "label": [i % 2 for i in range(n)]}, features=features)

    datasets.DatasetDict({"train": part(12), "validation": part(5)}).save_to_disk(str(tmp_path / "ds"))
    scored = evaluate(spec, str(tmp_path / "ds"))
    assert scored["split"] == "val"
    assert evaluate(spec, str(tmp_path / "ds"), split="val")["metrics"] == scored["metrics"]
    with pytest.raises(DataError, match=r"its test split is empty \(12 train, 5 val, 0 test samples\); eval "
                                        r"--split test needs it\. Pass --split val\."):
        evaluate(spec, str(tmp_path / "ds"), split="test")


def test_nan_inputs_are_named_by_their_row_in_the_file(tmp_path: Path, spec: str) -> None:
    rng = np.random.default_rng(4)
    x = rng.random((50, 4))
    x[7, 2] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=rng.integers(0, 4, 50))
    with pytest.raises(DataError, match=r"1 of 50 rows of its array 'x' hold NaN or inf inputs \(the first is "
                                        r"row 7\)") as caught:
        build(spec, str(tmp_path / "nan.npz"))
    assert "\n" not in str(caught.value)
    train_x, test_x = rng.random((20, 4)), rng.random((6, 4))
    test_x[[2, 4], 0] = np.inf
    np.savez(tmp_path / "inf.npz", x_train=train_x, y_train=rng.integers(0, 2, 20), x_test=test_x,
             y_test=rng.integers(0, 2, 6))
    with pytest.raises(DataError, match=r"2 of 6 rows of its array 'x_test' hold NaN or inf inputs \(the first is "
                                        r"row 2\)"):
        build(spec, str(tmp_path / "inf.npz"))


def _splits(train_x: torch.Tensor, test_x: torch.Tensor) -> DataSplits:
    labels = torch.zeros(len(train_x), dtype=torch.long)
    return assemble("mine", (train_x, labels), (train_x[:0], labels[:0]), (test_x, labels[:len(test_x)]))


def test_nan_inputs_of_data_without_a_file_are_not_blamed_on_every_sample() -> None:
    train_x = torch.rand(35, 3)
    train_x[0, 1] = float("nan")
    with pytest.raises(DataError, match=r"its train split holds NaN or inf inputs \(its per-channel mean or std "
                                        r"is not finite") as caught:
        check_finite(_splits(train_x, torch.rand(5, 3)), "mine")
    assert "35 of 35" not in str(caught.value)
    test_x = torch.rand(5, 3)
    test_x[3] = float("inf")
    with pytest.raises(DataError, match=r"1 of 5 samples of its test split hold NaN or inf inputs \(the first is "
                                        r"sample 3, counted within that split"):
        check_finite(_splits(torch.rand(35, 3), test_x), "mine")
    check_finite(_splits(torch.rand(35, 3), torch.rand(0, 3)), "mine")  # NOTE: empty splits hold nothing bad


def test_a_recipe_on_a_saved_folder_keeps_its_split_seed(tmp_path: Path, spec: str) -> None:
    from prunekit.recipes import parse_recipe, run_recipe

    data, _, _ = _trained_with_split_seed(tmp_path, spec, 3)
    recipe = {"model": str(tmp_path / "run"), "data": data,
              "stages": [{"prune": {"target": {"ratio": 0.3}, "finetune_epochs": 0}}]}
    run_recipe(parse_recipe(recipe), out_dir=tmp_path / "recipe", progress=False)
    assert read_manifest(tmp_path / "recipe" / "model").data["split_seed"] == 3
