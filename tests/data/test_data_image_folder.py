"""load_image_folder: tiny PNGs in both layouts, channel auto-detection, resizing, and errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from prunekit.data.custom import load_image_folder
from prunekit.errors import DataError, DataNotFoundError


def _png(path: Path, value: int, size: tuple[int, int] = (6, 5), mode: str = "L") -> Path:
    """A constant image of ``size`` (w, h) whose every pixel is ``value``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, value // 2, 255 - value)).save(path)
    return path


def _flat(root: Path, per_class: int = 4, mode: str = "L") -> Path:
    for c, cls in enumerate(("cat", "dog", "emu")):
        for i in range(per_class):
            _png(root / cls / f"{i}.png", 20 * c + 5 * i, mode=mode)
    return root


def test_flat_layout_grey(tmp_path: Path) -> None:
    root = _flat(tmp_path / "pets")
    (root / "cat" / "README.txt").write_text("not an image, skipped")
    splits = load_image_folder(root, seed=0)
    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [9, 1, 2]
    assert splits.input_shape == (1, 5, 6) and splits.num_classes == 3
    assert splits.class_names == ("cat", "dog", "emu") and splits.name == "pets"
    x, y = splits.train.tensors
    assert torch.equal(x.amax(dim=(1, 2, 3)), x.amin(dim=(1, 2, 3)))  # constant images stay constant
    assert abs(x.mean().item()) < 1e-5
    # Pixel values increase with class then index; the standardised values keep that order.
    order = torch.argsort(x[:, 0, 0, 0])
    assert y[order].tolist() == sorted(y.tolist())


def test_rgb_auto_and_forced_grey(tmp_path: Path) -> None:
    root = _flat(tmp_path / "rgb", mode="RGB")
    assert load_image_folder(root).input_shape == (3, 5, 6)
    assert load_image_folder(root, grayscale=True).input_shape == (1, 5, 6)
    _png(root / "cat" / "grey.png", 3)  # one greyscale image among RGB ones: auto picks RGB
    assert load_image_folder(root).input_shape == (3, 5, 6)


def test_sixteen_bit_grey_keeps_its_depth(tmp_path: Path) -> None:
    """16-bit greyscale PNGs (mode I;16) load as one channel scaled by 65535: converted to 8-bit they
    were clipped to white above 255 (and loaded as RGB)."""
    import numpy as np

    levels = ("dim", "mid", "bright")
    for c, cls in enumerate(levels):
        for i in range(3):
            folder = tmp_path / "depth" / cls
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((5, 6), 1000 + 20000 * c + 300 * i, dtype=np.uint16)).save(folder / f"{i}.png")
    assert Image.open(tmp_path / "depth" / "dim" / "0.png").mode.startswith("I")
    splits = load_image_folder(tmp_path / "depth", val_fraction=0.0, test_fraction=0.0)
    assert splits.input_shape == (1, 5, 6)
    x, y = splits.train.tensors
    raw = x[:, 0, 0, 0] * splits.std[0] + splits.mean[0]
    c = [levels.index(splits.class_names[int(label)]) for label in y]  # NOTE: classes sort by name
    want = torch.tensor([(1000 + 20000 * c[k] + 300 * (k % 3)) / 65535 for k in range(len(y))])
    torch.testing.assert_close(raw, want, rtol=0, atol=1e-5)


def test_train_test_layout(tmp_path: Path) -> None:
    for split, n in (("train", 5), ("test", 2)):
        for c, cls in enumerate(("ant", "bee")):
            for i in range(n):
                _png(tmp_path / "bugs" / split / cls / f"{i}.png", 100 * c + i)
    splits = load_image_folder(tmp_path / "bugs", val_fraction=0.2)
    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [8, 2, 4]
    assert splits.test.tensors[1].tolist() == [0, 0, 1, 1]
    assert splits.class_names == ("ant", "bee")


def test_resize(tmp_path: Path) -> None:
    root = _flat(tmp_path / "r", per_class=2)
    _png(root / "dog" / "big.png", 9, size=(20, 11))
    assert load_image_folder(root, image_size=8).input_shape == (1, 8, 8)
    assert load_image_folder(root, image_size=(4, 7)).input_shape == (1, 4, 7)


def test_size_mismatch_names_the_file_and_suggests_image_size(tmp_path: Path) -> None:
    root = _flat(tmp_path / "m", per_class=2)
    odd = _png(root / "dog" / "odd.png", 9, size=(20, 11))
    with pytest.raises(DataError) as info:
        load_image_folder(root)
    message = str(info.value)
    assert str(odd) in message and "11x20" in message and "image_size" in message


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    root = _flat(tmp_path / "u", per_class=2)
    bad = root / "emu" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"broken.png.*readable image"):
        load_image_folder(root)
    with pytest.raises(DataError, match=r"broken.png.*readable image"):
        load_image_folder(root, image_size=4)


def test_truncated_image_is_named(tmp_path: Path) -> None:
    root = _flat(tmp_path / "t", per_class=2)
    path = _png(root / "emu" / "cut.png", 1)  # same size, so only decoding the pixels can fail
    path.write_bytes(path.read_bytes()[:45])
    with pytest.raises(DataError, match=r"cut.png.*readable image"):
        load_image_folder(root)


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="absent"):
        load_image_folder(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="found nothing"):
        load_image_folder(tmp_path / "empty")
    _png(tmp_path / "flat" / "a.png", 1)
    with pytest.raises(DataError, match="found only files.*class subfolders"):
        load_image_folder(tmp_path / "flat")
    (tmp_path / "hollow" / "cls").mkdir(parents=True)
    with pytest.raises(DataError, match=r"hollow/cls.*found none"):
        load_image_folder(tmp_path / "hollow")
    with pytest.raises(DataError, match="found a file"):
        load_image_folder(tmp_path / "flat" / "a.png")


def test_one_class_folder_is_refused_naming_the_class(tmp_path: Path) -> None:
    """One class subfolder is data no classifier learns from: the loader says so, not the loss."""
    _png(tmp_path / "one" / "cat" / "0.png", 1)
    _png(tmp_path / "one" / "cat" / "1.png", 2)
    with pytest.raises(DataError, match=r"'.*one': expected at least 2 class subfolders .*found only 'cat'"):
        load_image_folder(tmp_path / "one")
    _png(tmp_path / "split" / "train" / "cat" / "0.png", 1)
    _png(tmp_path / "split" / "test" / "cat" / "0.png", 1)
    with pytest.raises(DataError, match="found only 'cat'"):
        load_image_folder(tmp_path / "split")
