"""A user's own files as they come: mixed bit depths, class folders copied through macOS, split
folders, RGBA arrays, labels counted from 1, a saved datasets folder of 8-bit images, a BOM."""

from __future__ import annotations

import json
import unicodedata
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from prunekit import data
from prunekit.data.custom import _decode, load_image_folder, load_npz
from prunekit.errors import DataError

Image = pytest.importorskip("PIL.Image")
_GREY16 = 20000  # a mid-dark 16-bit grey: 20000 / 65535 = 0.305


def _raw(splits: data.DataSplits, split: str = "train") -> torch.Tensor:
    """A split's inputs before standardisation, on the [0, 1] scale."""
    x = getattr(splits, split).tensors[0]
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return x * torch.tensor(splits.std).view(shape) + torch.tensor(splits.mean).view(shape)


def _rgb(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 5, 3), value, dtype=np.uint8)).save(path)


# --- 1. a 16-bit grey file among colour files --------------------------------------------------

def test_sixteen_bit_grey_among_colour_images_keeps_its_depth(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        for i in range(3):
            _rgb(tmp_path / "mix" / cls / f"rgb{i}.png", 40 * i)
    Image.fromarray(np.full((6, 5), _GREY16, dtype=np.uint16)).save(tmp_path / "mix" / "a" / "0grey16.png")
    splits = load_image_folder(tmp_path / "mix", val_fraction=0, test_fraction=0)
    assert splits.input_shape == (3, 6, 5)
    grey = _raw(splits)[0]  # a/0grey16.png sorts first
    assert grey.flatten().tolist() == pytest.approx([_GREY16 / 65535] * grey.numel(), abs=1e-5)


def test_predict_script_reads_sixteen_bit_grey_for_an_rgb_model_as_the_loader(tmp_path: Path) -> None:
    from prunekit.quantize import predict_script, write_bundle

    wide = np.random.default_rng(0).integers(0, 65536, (9, 7), dtype=np.uint16)
    files = [tmp_path / "i16.png", tmp_path / "i32.tif", tmp_path / "f.tif"]
    Image.fromarray(wide).save(files[0])
    Image.fromarray(wide.astype(np.int32)).save(files[1])
    Image.fromarray(wide / np.float32(65535)).save(files[2])
    (tmp_path / "model.bin").write_bytes(b"not read here")
    write_bundle(tmp_path / "model.bin", tmp_path / "bundle", input_name="input", input_shape=(3, 6, 5),
                 mean=[0.0] * 3, std=[1.0] * 3, pixel_scale=1 / 255)
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    for file in files:
        loader = _decode(Image, [(file, 0)], (6, 5), False)[0][0].numpy()
        script = predict_script.prepare(str(file), manifest)
        assert np.array_equal(script, loader), file.name
        assert 0.2 < float(script.mean()) < 0.8 and np.array_equal(script[0], script[2])  # not clipped to white


# --- 2. class names in two Unicode forms ---------------------------------------------------------

_NAMES = ("apple", "éclair", "fig")


def _classes(root: Path, form: str) -> Path:
    """Class k is filled with 50 * (k + 1); folder names in Unicode ``form``."""
    for k, name in enumerate(_NAMES):
        for i in range(2):
            _rgb(root / unicodedata.normalize(form, name) / f"{i}.png", 50 * (k + 1))
    return root


def test_nfd_class_folders_get_the_labels_of_their_nfc_names(tmp_path: Path) -> None:
    nfc = load_image_folder(_classes(tmp_path / "nfc", "NFC"), val_fraction=0, test_fraction=0)
    nfd = load_image_folder(_classes(tmp_path / "nfd", "NFD"), val_fraction=0, test_fraction=0)
    assert nfd.class_names == nfc.class_names == ("apple", "fig", "éclair")  # NFC code-point order
    assert all(unicodedata.is_normalized("NFC", name) for name in nfd.class_names)
    for splits in (nfc, nfd):
        x, y = _raw(splits), splits.train.tensors[1]
        level = {splits.class_names[int(label)]: round(float(v) * 255) for v, label in zip(x[:, 0, 0, 0], y)}
        assert level == {"apple": 50, "éclair": 100, "fig": 150}


def test_label_matching_ignores_the_unicode_form(tmp_path: Path) -> None:
    splits = load_image_folder(_classes(tmp_path / "nfc", "NFC"), val_fraction=0, test_fraction=0)
    model_names = [unicodedata.normalize("NFD", n) for n in ("éclair", "apple", "fig")]
    ordered = splits.in_class_order(model_names)
    assert ordered is not None and ordered.class_names == ("éclair", "apple", "fig")
    assert ordered.train.tensors[1].tolist() == [{0: 1, 1: 2, 2: 0}[int(v)] for v in splits.train.tensors[1]]


# --- 3. split folders ------------------------------------------------------------------------------

def _split_folder(root: Path, counts: dict[str, int]) -> Path:
    for split, n in counts.items():
        for c, cls in enumerate(("cat", "dog")):
            for i in range(n):
                _rgb(root / split / cls / f"{i}.png", 100 * c + i)
    return root


def test_val_folder_is_used_as_the_val_split(tmp_path: Path) -> None:
    root = _split_folder(tmp_path / "three", {"train": 5, "val": 3, "test": 2})
    splits = load_image_folder(root)
    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [10, 6, 4]
    assert splits.class_names == ("cat", "dog")
    assert sorted(round(float(v) * 255) for v in _raw(splits, "val")[:, 0, 0, 0]) == [0, 1, 2, 100, 101, 102]


@pytest.mark.parametrize("val_name", ["val", "valid", "validation"])
def test_train_and_val_folders_hold_the_test_split_out_of_train(tmp_path: Path, val_name: str) -> None:
    root = _split_folder(tmp_path / "two", {"train": 5, val_name: 3})
    splits = load_image_folder(root, test_fraction=0.2)
    assert splits.class_names == ("cat", "dog")
    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [8, 6, 2]


def test_class_folders_named_like_splits_stay_classes(tmp_path: Path) -> None:
    for cls in ("invalid", "valid", "test"):
        for i in range(5):
            _rgb(tmp_path / "flat" / cls / f"{i}.png", i)
    assert load_image_folder(tmp_path / "flat").class_names == ("invalid", "test", "valid")


@pytest.mark.parametrize(("extra", "fragment"), [
    ("cow/0.png", "mixes split folders (train, val) with other folders (cow)"),
    ("validation/cat/0.png", "has both 'val' and 'validation'"),
], ids=["a class beside the splits", "two val folders"])
def test_ambiguous_split_layouts_are_one_line_errors(tmp_path: Path, extra: str, fragment: str) -> None:
    root = _split_folder(tmp_path / "odd", {"train": 2, "val": 1})
    _rgb(root / extra, 7)
    with pytest.raises(DataError) as info:
        load_image_folder(root)
    message = str(info.value)
    assert fragment in message and "root/train/<class>/<image> with root/val/" in message
    assert "\n" not in message


def test_split_folders_without_train_are_refused(tmp_path: Path) -> None:
    root = _split_folder(tmp_path / "notrain", {"val": 2, "test": 2})
    with pytest.raises(DataError, match=r"has test/, val/ but no train/; expected one of these layouts"):
        load_image_folder(root)


# --- 4. channels-last arrays of 2 or 4 channels ---------------------------------------------------

@pytest.mark.parametrize("channels", [2, 4], ids=["grey+alpha", "rgba"])
def test_channels_last_alpha_arrays_are_transposed(tmp_path: Path, channels: int) -> None:
    x = np.random.default_rng(0).integers(0, 256, (12, 16, 9, channels), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", x=x, y=np.arange(12) % 3)
    splits = load_npz(tmp_path / "a.npz", val_fraction=0, test_fraction=0)
    assert splits.input_shape == (channels, 16, 9) and len(splits.mean) == channels
    np.testing.assert_allclose(_raw(splits).numpy(), x.transpose(0, 3, 1, 2) / 255, atol=1e-5)


# --- 5. a saved datasets folder of 8-bit (and 16-bit) images ----------------------------------------

def test_saved_image_dataset_records_its_pixel_scale(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    pictures = [Image.fromarray(np.full((4, 4, 3), 30 * k, dtype=np.uint8)) for k in range(6)]
    rows = {"image": pictures, "label": [k % 2 for k in range(6)]}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "one"))
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=features),
                          "test": datasets.Dataset.from_dict(rows, features=features)}).save_to_disk(str(tmp_path / "dd"))
    for folder in ("one", "dd"):
        splits = data.load(str(tmp_path / folder))
        assert splits.pixel_scale == pytest.approx(1 / 255)
        again = splits.standardised_as([0.5] * 3, [0.25] * 3, 1 / 255)
        raw = _raw(splits)
        torch.testing.assert_close(again.train.tensors[0], (raw - 0.5) / 0.25, atol=1e-4, rtol=0)


def test_saved_sixteen_bit_dataset_keeps_its_depth(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    pictures = [Image.fromarray(np.full((4, 4), _GREY16, dtype=np.uint16)) for _ in range(4)]
    datasets.Dataset.from_dict({"image": pictures, "label": [0, 1, 0, 1]}, features=features
                               ).save_to_disk(str(tmp_path / "deep"))
    splits = data.load_dataset_folder(tmp_path / "deep", val_fraction=0, test_fraction=0)
    assert splits.input_shape == (1, 4, 4) and splits.mean == pytest.approx((_GREY16 / 65535,), abs=1e-5)


# --- 6. labels with gaps, a BOM ------------------------------------------------------------------

@pytest.mark.parametrize(("labels", "fragment"), [
    (np.arange(12) % 3 + 1, "no sample has label 0; num_classes is inferred as 4"),
    (np.where(np.arange(12) % 3 == 2, 1000, np.arange(12) % 3), "no sample has label 2, 3, 4, 5, 6, ... (998 in all); "
                                                                 "num_classes is inferred as 1001"),
], ids=["from 1", "stray 1000"])
def test_labels_with_gaps_are_a_one_line_warning(tmp_path: Path, labels: np.ndarray, fragment: str) -> None:
    np.savez(tmp_path / "gaps.npz", x=np.random.default_rng(0).random((12, 4)), y=labels)
    with pytest.warns(UserWarning, match=r"Labels of 'gaps' are not 0\.\.\d+ without gaps") as record:
        splits = load_npz(tmp_path / "gaps.npz")
    message = str(record[0].message)
    assert fragment in message and "\n" not in message
    assert splits.num_classes == int(labels.max()) + 1


def test_contiguous_labels_give_no_warning(tmp_path: Path) -> None:
    np.savez(tmp_path / "fine.npz", x=np.random.default_rng(0).random((12, 4)), y=np.arange(12) % 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_npz(tmp_path / "fine.npz").num_classes == 3


def test_a_bom_is_not_text(tmp_path: Path) -> None:
    text = "hello world, hello again\n" * 8
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf" + text.encode())
    loaders = data.load_text(tmp_path / "bom.txt", "bytes", block_size=8, val_fraction=0, batch_size=100)
    ids = torch.cat([batch["input_ids"] for batch in loaders.train]).flatten()
    assert loaders.info["tokens"] == len(text.encode()) and 0xEF not in ids.tolist()
