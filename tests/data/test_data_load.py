"""prunekit.data.load / create / names: one entry point for names, .npz files and image folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import prunekit.data as data
from prunekit.errors import ConfigError, DataError, DataNotFoundError, UnknownNameError


def test_every_exported_name_exists() -> None:
    assert sorted(data.__all__) == sorted(set(data.__all__))
    for name in data.__all__:
        assert getattr(data, name) is not None


def test_registry_names_and_metadata() -> None:
    assert data.names() == ["digits", "fashion_mnist"]
    assert data.names("fash*") == ["fashion_mnist"]
    assert "Fashion-MNIST" in data.DATASETS.get("fashion_mnist").meta["description"]


def test_registered_name_with_hyphen_and_data_dir(tiny_fashion) -> None:
    folder = tiny_fashion(n_train=20, n_test=10)
    splits = data.load("fashion-mnist", data_dir=folder, val_fraction=0.5, seed=2)
    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [10, 10, 10]
    assert splits.name == "fashion_mnist"
    assert len(data.create("fashion-mnist", data_dir=folder).test) == 10


def test_data_dir_is_only_passed_to_datasets_that_take_it(tmp_path: Path) -> None:
    splits = data.load("digits", data_dir=tmp_path / "ignored", seed=0)
    assert splits.name == "digits" and splits.input_shape == (1, 8, 8)
    with pytest.raises(ConfigError, match="image_size"):
        data.load("digits", image_size=16)


def test_npz_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.npz"
    np.savez(path, x=np.random.default_rng(0).random((30, 4)), y=np.arange(30) % 3)
    splits = data.load(str(path), val_fraction=0.1)
    assert splits.name == "mine" and splits.num_classes == 3 and splits.input_shape == (4,)
    assert len(splits.val) == 3
    with pytest.raises(ConfigError, match="image folders"):
        data.load(path, image_size=8)


def test_image_folder_path(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(5):
            Image.new("L", (9, 7), 10 * i).save(tmp_path / "imgs" / cls / f"{i}.png")
    splits = data.load(tmp_path / "imgs", image_size=4)
    assert splits.input_shape == (1, 4, 4) and splits.class_names == ("a", "b")


def test_unknown_name_suggests_and_lists_forms() -> None:
    with pytest.raises(UnknownNameError) as info:
        data.load("fashion_mnst")
    message = str(info.value)
    assert "Did you mean 'fashion_mnist'?" in message
    assert "digits" in message and ".npz" in message and "image folder" in message
    assert "`prunekit datasets`" in message
    with pytest.raises(UnknownNameError, match="fashion_mnist"):
        data.load("fashion-mnst")
    with pytest.raises(UnknownNameError, match="fashion_mnist"):
        data.create("fashion_mnst")


def test_paths_that_do_not_fit(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="missing.npz"):
        data.load(str(tmp_path / "missing.npz"))
    with pytest.raises(DataNotFoundError, match="no/such/dir"):
        data.load(str(tmp_path / "no" / "such" / "dir"))
    table = tmp_path / "notes.csv"
    table.write_text("hello")
    with pytest.raises(DataError, match=r"notes.csv.*'\.csv' file"):
        data.load(str(table))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ConfigError, match=r"notes.txt' is a text file; expected a tokenizer"):
        data.load(str(text))
