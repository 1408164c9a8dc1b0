"""load_dataset_folder: a datasets.save_to_disk folder as image classification or LM token blocks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _text_files import TEXT, save_tokenizer

from prunekit import data
from prunekit.errors import ConfigError, DataError, DataNotFoundError

datasets = pytest.importorskip("datasets")
Image = pytest.importorskip("PIL.Image")


def _images(n: int, mode: str = "L") -> tuple[list, list[int]]:
    """Class k images are filled with the value 40 * (k + 1), so they can be told apart."""
    rng = np.random.default_rng(0)
    labels = [i % 3 for i in range(n)]
    shape = (6, 5) if mode == "L" else (6, 5, 3)
    pictures = [Image.fromarray(np.full(shape, 40 * (k + 1), dtype=np.uint8) + rng.integers(0, 3, shape, dtype=np.uint8), mode)
                for k in labels]
    return pictures, labels


def _features():
    return datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})


def test_image_dataset_becomes_standardised_splits(tmp_path: Path) -> None:
    pictures, labels = _images(30)
    datasets.Dataset.from_dict({"image": pictures, "label": labels}, features=_features()).save_to_disk(str(tmp_path / "ds"))
    splits = data.load(str(tmp_path / "ds"), val_fraction=0.1)
    assert isinstance(splits, data.DataSplits) and splits.class_names == ("a", "b", "c")
    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [21, 3, 6]
    assert splits.input_shape == (1, 6, 5) and splits.num_classes == 3
    x, y = splits.train.tensors
    means = [float(x[y == k].mean()) for k in range(3)]
    assert means[0] < means[1] < means[2] and abs(float(x.mean())) < 1e-5
    batch = next(iter(splits.loaders(batch_size=4).train))
    assert batch[0].shape == (4, 1, 6, 5) and batch[1].dtype == torch.long


def test_dataset_dict_keeps_its_splits_and_resizes_rgb(tmp_path: Path) -> None:
    pictures, labels = _images(12, "RGB")
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})

    def make(a: int, b: int) -> datasets.Dataset:
        return datasets.Dataset.from_dict({"img": pictures[a:b], "label": labels[a:b]}, features=features)

    datasets.DatasetDict({"train": make(0, 6), "validation": make(6, 9), "test": make(9, 12)}).save_to_disk(str(tmp_path / "dd"))
    splits = data.load_dataset_folder(tmp_path / "dd", image_size=4)
    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [6, 3, 3]
    assert splits.input_shape == (3, 4, 4)
    assert splits.test.tensors[1].tolist() == labels[9:12]


def test_text_dataset_becomes_token_blocks(tmp_path: Path) -> None:
    tok_dir = save_tokenizer(tmp_path / "tok")
    lines = TEXT.splitlines()
    datasets.Dataset.from_dict({"text": lines, "id": list(range(len(lines)))}).save_to_disk(str(tmp_path / "txt"))
    loaders = data.load(str(tmp_path / "txt"), tokenizer=str(tok_dir), block_size=8, batch_size=2)
    assert isinstance(loaders, data.Loaders) and loaders.task == "causal_lm"
    from_file = tmp_path / "same.txt"
    from_file.write_text(TEXT)
    assert loaders.info["tokens"] == data.load_text(from_file, tok_dir, block_size=8).info["tokens"]
    assert next(iter(loaders.train))["input_ids"].shape == (2, 8)
    with pytest.raises(ConfigError, match="column 'text'.*tokenizer"):
        data.load_dataset_folder(tmp_path / "txt")


def test_input_ids_column_needs_no_tokenizer(tmp_path: Path) -> None:
    rows = [[i % 7 for i in range(j, j + 10)] for j in range(6)]
    datasets.Dataset.from_dict({"input_ids": rows}).save_to_disk(str(tmp_path / "ids"))
    loaders = data.load_dataset_folder(tmp_path / "ids", block_size=5, val_fraction=0.2)
    assert loaders.info["tokens"] == 60 and loaders.info["val_blocks"] == 2
    assert torch.cat([b["input_ids"] for b in loaders.val]).flatten().tolist() == [t for row in rows for t in row][50:]


def test_unusable_folders_are_clear(tmp_path: Path) -> None:
    datasets.Dataset.from_dict({"x": [1.0, 2.0], "y": [0.5, 0.1]}).save_to_disk(str(tmp_path / "num"))
    with pytest.raises(DataError, match=r"columns \['x', 'y'\]; expected image \+ label"):
        data.load_dataset_folder(tmp_path / "num")
    with pytest.raises(DataNotFoundError, match="does not exist"):
        data.load_dataset_folder(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="not a saved datasets folder"):
        data.load_dataset_folder(tmp_path / "plain")
    datasets.DatasetDict({"test": datasets.Dataset.from_dict({"text": ["a"]})}).save_to_disk(str(tmp_path / "nt"))
    with pytest.raises(DataError, match="expected a 'train' split"):
        data.load_dataset_folder(tmp_path / "nt")
