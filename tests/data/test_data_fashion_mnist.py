"""Fashion-MNIST: the real files from the Debian package, plus tiny IDX folders for every override
and failure (missing folder or file, mismatched counts, bad labels, corrupt files)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from prunekit.data import DataSplits
from prunekit.data import fashion_mnist as fm
from prunekit.data.fashion_mnist import CLASS_NAMES, load_fashion_mnist
from prunekit.errors import DataError, DataNotFoundError

REAL_DIR = fm.DEFAULT_DIR
needs_real = pytest.mark.skipif(not (REAL_DIR / "train-images-idx3-ubyte.gz").is_file(),
                                reason=f"Fashion-MNIST not in {REAL_DIR}: run `make data`")


@pytest.fixture(scope="module")
def real() -> DataSplits:
    return load_fashion_mnist(data_dir=REAL_DIR)


@needs_real
def test_real_split_sizes_shapes_and_dtypes(real) -> None:
    assert [len(s) for s in (real.train, real.val, real.test)] == [54000, 6000, 10000]
    for split in (real.train, real.val, real.test):
        x, y = split.tensors
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 28, 28)
        assert y.dtype == torch.int64 and y.shape == (len(x),)
    assert real.num_classes == 10 and real.input_shape == (1, 28, 28)
    assert real.class_names == CLASS_NAMES and real.class_names[9] == "Ankle boot"


@needs_real
def test_real_inputs_are_normalised(real) -> None:
    x = real.train.tensors[0]
    assert abs(x.mean().item()) < 0.01 and abs(x.std().item() - 1.0) < 0.01
    # The smallest pixel is 0, which the normalisation maps to -mean/std.
    assert x.min().item() == pytest.approx(-fm.MEAN / fm.STD, abs=1e-5)


@needs_real
def test_real_labels_cover_ten_balanced_classes(real) -> None:
    assert torch.bincount(real.test.tensors[1]).tolist() == [1000] * 10
    train_val = torch.cat([real.train.tensors[1], real.val.tensors[1]])
    assert torch.bincount(train_val).tolist() == [6000] * 10


@needs_real
def test_real_split_is_deterministic_per_seed(real) -> None:
    again = load_fashion_mnist(data_dir=REAL_DIR, seed=0)
    other = load_fashion_mnist(data_dir=REAL_DIR, seed=1)
    assert torch.equal(again.val.tensors[0], real.val.tensors[0])
    assert torch.equal(again.val.tensors[1], real.val.tensors[1])
    assert not torch.equal(other.val.tensors[0], real.val.tensors[0])
    assert torch.equal(other.test.tensors[0], real.test.tensors[0])  # the test split never moves


def test_data_dir_reads_tiny_files_exactly(tiny_fashion) -> None:
    folder = tiny_fashion(n_train=20, n_test=10)
    splits = load_fashion_mnist(data_dir=folder, val_fraction=0.25)
    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [15, 5, 10]
    raw = fm.read_idx(folder / "t10k-images-idx3-ubyte.gz")
    expected = (torch.from_numpy(raw.copy()).float() / 255 - fm.MEAN) / fm.STD
    assert torch.allclose(splits.test.tensors[0][:, 0], expected, atol=1e-5)
    assert splits.test.tensors[1].tolist() == [i % 10 for i in range(10)]


def test_env_var_is_used_and_data_dir_wins(tiny_fashion, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PRUNEKIT_DATA", str(tiny_fashion(n_train=30)))
    assert len(load_fashion_mnist(val_fraction=0.0).train) == 30
    monkeypatch.setenv("PRUNEKIT_DATA", str(tmp_path / "nowhere"))
    assert len(load_fashion_mnist(data_dir=tiny_fashion(n_train=12, name="b"), val_fraction=0).train) == 12
    with pytest.raises(DataNotFoundError, match="PRUNEKIT_DATA"):
        load_fashion_mnist()


def test_uncompressed_files_are_accepted(tiny_fashion) -> None:
    folder = tiny_fashion(gz=False)
    assert not list(folder.glob("*.gz"))
    assert len(load_fashion_mnist(data_dir=folder).test) == 10


def test_missing_folder_says_how_to_get_the_data(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as info:
        load_fashion_mnist(data_dir=tmp_path / "absent")
    message = str(info.value)
    for fragment in ("train-images-idx3-ubyte.gz", str(tmp_path / "absent"), "does not exist",
                     "sudo apt-get install dataset-fashion-mnist", "make demo", "--data-dir",
                     "PRUNEKIT_DATA"):
        assert fragment in message


def test_missing_single_file_is_named(tiny_fashion) -> None:
    folder = tiny_fashion()
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataNotFoundError, match="t10k-labels-idx1-ubyte.gz") as info:
        load_fashion_mnist(data_dir=folder)
    assert "does not exist" not in str(info.value) and "dataset-fashion-mnist" in str(info.value)


def test_image_and_label_counts_must_agree(tiny_fashion, write_idx) -> None:
    folder = tiny_fashion(n_train=20)
    labels = write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(19, np.uint8))
    with pytest.raises(DataError, match="20 images and 19 labels") as info:
        load_fashion_mnist(data_dir=folder)
    assert str(labels) in str(info.value) and str(folder / "train-images-idx3-ubyte.gz") in str(info.value)


def test_labels_must_be_in_range(tiny_fashion, write_idx) -> None:
    folder = tiny_fashion(n_test=10)
    labels = write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.full(10, 12, np.uint8))
    with pytest.raises(DataError, match="0..9") as info:
        load_fashion_mnist(data_dir=folder)
    assert str(labels) in str(info.value)


def test_wrong_image_shape_is_named(tiny_fashion, write_idx) -> None:
    folder = tiny_fashion(n_test=10)
    images = write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((10, 32, 32), np.uint8))
    with pytest.raises(DataError, match=r"\[N, 28, 28\]") as info:
        load_fashion_mnist(data_dir=folder)
    assert str(images) in str(info.value)


def test_corrupt_file_advises_reinstalling(tiny_fashion) -> None:
    folder = tiny_fashion()
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError) as info:
        load_fashion_mnist(data_dir=folder)
    assert str(path) in str(info.value) and "dataset-fashion-mnist" in str(info.value)


def test_decoded_arrays_are_cached_until_a_file_changes(tiny_fashion, write_idx) -> None:
    folder = tiny_fashion()
    first = load_fashion_mnist(data_dir=folder)
    hits = fm._decoded.cache_info().hits
    load_fashion_mnist(data_dir=folder)
    assert fm._decoded.cache_info().hits == hits + 1
    path = write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.full(10, 3, np.uint8))
    os.utime(path, ns=(0, 123))  # a new mtime, whatever the file system's clock resolution
    changed = load_fashion_mnist(data_dir=folder)
    assert changed.test.tensors[1].tolist() == [3] * 10 != first.test.tensors[1].tolist()

