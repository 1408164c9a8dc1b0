"""load_npz: both key layouts, every input layout, and an actionable error for each bad file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from prunekit.data.custom import load_npz
from prunekit.errors import DataError, DataNotFoundError

RNG = np.random.default_rng(0)


def _save(tmp_path: Path, name: str = "d.npz", **arrays: np.ndarray) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_x_y_layout_is_split_and_standardised(tmp_path: Path) -> None:
    x = RNG.integers(0, 256, (50, 6, 5), dtype=np.uint8)
    y = np.arange(50) % 4
    splits = load_npz(_save(tmp_path, x=x, y=y), val_fraction=0.2, test_fraction=0.2, seed=1)
    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [30, 10, 10]
    assert splits.input_shape == (1, 6, 5) and splits.num_classes == 4 and splits.name == "d"
    xt = splits.train.tensors[0]
    assert abs(xt.mean().item()) < 1e-5 and xt.std().item() == pytest.approx(1.0, abs=1e-3)
    again = load_npz(tmp_path / "d.npz", val_fraction=0.2, test_fraction=0.2, seed=1)
    assert torch.equal(again.test.tensors[0], splits.test.tensors[0])


def test_explicit_layout_keeps_the_given_splits(tmp_path: Path) -> None:
    x = RNG.random((20, 3, 4, 4)).astype(np.float32)
    path = _save(tmp_path, x_train=x[:12], y_train=np.zeros(12, np.int64), x_val=x[12:15],
                 y_val=np.ones(3, np.int32), x_test=x[15:], y_test=np.full(5, 4, np.uint8))
    splits = load_npz(path)
    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [12, 3, 5]
    assert splits.num_classes == 5  # max label + 1 over every split, here from the test split
    assert splits.test.tensors[1].dtype == torch.int64
    xt = x[:12]
    mean, std = xt.mean(axis=(0, 2, 3), keepdims=True), xt.std(axis=(0, 2, 3), ddof=1, keepdims=True)
    np.testing.assert_allclose(splits.test.tensors[0].numpy(), (x[15:] - mean) / std, rtol=1e-4, atol=1e-5)


def test_explicit_layout_without_val_holds_out_part_of_train(tmp_path: Path) -> None:
    x = RNG.random((30, 8)).astype(np.float32)
    path = _save(tmp_path, x_train=x[:20], y_train=np.arange(20) % 2, x_test=x[20:], y_test=np.arange(10) % 2)
    splits = load_npz(path, val_fraction=0.25)
    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [15, 5, 10]
    assert splits.input_shape == (8,)


def test_channels_last_images_are_transposed(tmp_path: Path) -> None:
    x = RNG.integers(0, 256, (10, 7, 6, 3), dtype=np.uint8)
    y = np.arange(10) % 2
    splits = load_npz(_save(tmp_path, x_train=x, y_train=y, x_val=x[:2], y_val=y[:2], x_test=x, y_test=y))
    assert splits.input_shape == (3, 7, 6)
    chw = x.transpose(0, 3, 1, 2).astype(np.float64) / 255
    mean, std = chw.mean(axis=(0, 2, 3), keepdims=True), chw.std(axis=(0, 2, 3), ddof=1, keepdims=True)
    np.testing.assert_allclose(splits.test.tensors[0].numpy(), (chw - mean) / std, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("shape", "expected"), [
    ((12, 3, 8, 8), (3, 8, 8)),    # channels-first stays
    ((12, 1, 8, 1), (1, 8, 1)),    # ambiguous: axis 1 is a plausible channel count, so C-first
    ((12, 9, 9, 1), (1, 9, 9)),    # channels-last grey
    ((12, 5, 5, 5), (5, 5, 5)),    # no small axis: taken as channels-first
])
def test_layout_rule(tmp_path: Path, shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    splits = load_npz(_save(tmp_path, x=RNG.random(shape), y=np.arange(12) % 3))
    assert splits.input_shape == expected


def test_features_standardised_per_feature_and_constant_column_is_safe(tmp_path: Path) -> None:
    x = np.stack([RNG.normal(5, 3, 40), np.full(40, 2.0), RNG.normal(-1, 0.1, 40)], axis=1)
    splits = load_npz(_save(tmp_path, x=x, y=(np.arange(40) % 2).reshape(-1, 1)))
    xt = splits.train.tensors[0]
    assert torch.isfinite(xt).all()
    assert torch.allclose(xt.mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(xt.std(0)[[0, 2]], torch.ones(2), atol=1e-4)
    assert splits.train.tensors[1].shape == (len(xt),)  # [N, 1] labels are flattened


def test_missing_keys_lists_found_keys_and_layouts(tmp_path: Path) -> None:
    path = _save(tmp_path, images=np.zeros((3, 2)), targets=np.zeros(3, int))
    with pytest.raises(DataError) as info:
        load_npz(path)
    message = str(info.value)
    for fragment in (str(path), "'images'", "'targets'", "x_train, y_train, x_test, y_test", "x, y"):
        assert fragment in message


def test_length_mismatch(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"'x' and 'y'.*found 10 and 9"):
        load_npz(_save(tmp_path, x=np.zeros((10, 4)), y=np.zeros(9, int)))


def test_float_labels_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"integer class labels in 'y_train'.*float64.*astype"):
        load_npz(_save(tmp_path, x_train=np.zeros((4, 2)), y_train=np.zeros(4), x_test=np.zeros((2, 2)),
                       y_test=np.zeros(2, int)))


@pytest.mark.parametrize(("arrays", "fragment"), [
    ({"x": np.zeros((0, 4)), "y": np.zeros(0, int)}, "non-empty array 'x'"),
    ({"x": np.zeros((3, 4)), "y": np.zeros(0, int)}, "non-empty 1-D"),
    ({"x": np.zeros((3, 4)), "y": np.zeros((3, 5), int)}, "not one-hot"),
    ({"x": np.zeros((3, 4)), "y": np.array([0, -1, 2])}, ">= 0"),
    ({"x": np.zeros((3, 2, 2, 2, 2)), "y": np.zeros(3, int)}, "found shape (3, 2, 2, 2, 2)"),
    ({"x": np.array(["a", "b"]), "y": np.zeros(2, int)}, "expected numeric 'x'"),
    ({"x_train": np.zeros((3, 4)), "y_train": np.zeros(3, int), "x_test": np.zeros((2, 5)),
      "y_test": np.zeros(2, int)}, "'x_test' samples of shape (4,)"),
    ({"x_train": np.zeros((3, 4)), "y_train": np.zeros(3, int), "x_val": np.zeros((1, 4)),
      "x_test": np.zeros((2, 4)), "y_test": np.zeros(2, int)}, "only one of x_val / y_val"),
])
def test_bad_arrays(tmp_path: Path, arrays: dict[str, np.ndarray], fragment: str) -> None:
    path = _save(tmp_path, **arrays)
    with pytest.raises(DataError) as info:
        load_npz(path)
    assert fragment in str(info.value) and str(path) in str(info.value)


def test_missing_corrupt_and_npy_files(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="absent.npz"):
        load_npz(tmp_path / "absent.npz")
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 definitely not a zip archive")
    with pytest.raises(DataError, match=r"broken.npz.*damaged archive"):
        load_npz(broken)
    text = tmp_path / "text.npz"
    text.write_text("x,y\n1,2\n")
    with pytest.raises(DataError, match=r"text.npz.*without a zip header"):
        load_npz(text)
    single = tmp_path / "single.npz"
    with open(single, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(DataError, match="single .npy array"):
        load_npz(single)
    pickled = _save(tmp_path, "obj.npz", x=np.array([{"a": 1}], dtype=object), y=np.zeros(1, int))
    with pytest.raises(DataError, match=r"obj.npz.*object \(pickled\) array"):
        load_npz(pickled)
