"""A user's own data: a ``.npz`` file of arrays, or a folder of images sorted by class.

Both are read whole into memory as tensors, so they are meant for small datasets (up to a few
hundred MB). Every split is standardised per channel with the train split's mean and std.
"""

from __future__ import annotations

import unicodedata
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from prunekit.data.base import DataSplits, split_indices
from prunekit.errors import ConfigError, DataError, DataNotFoundError, require

__all__ = ["IMAGE_EXTENSIONS", "assemble", "from_arrays", "load_image_folder", "load_npz", "split_three"]

Split = tuple[torch.Tensor, torch.Tensor]
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                              ".ppm", ".pgm"})
_NPZ_LAYOUTS = ("x_train, y_train, x_test, y_test (optionally x_val, y_val)", "x, y (split for you)")
# NOTE: split folder names an image folder may hold, and the split each one is
_SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
_FOLDER_LAYOUTS = ("root/<class>/<image> (split for you), or root/train/<class>/<image> with root/val/ "
                   "(or valid/, validation/) and/or root/test/ beside it, each holding class subfolders")


# --- shared by every loader built from arrays ------------------------------------------------

def split_three(n: int, val_fraction: float, test_fraction: float,
                seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Deterministic (train, val, test) index split of ``range(n)``; fractions are of ``n``."""
    for label, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= fraction < 1.0:
            raise ConfigError(f"{label} must be in [0, 1); got {fraction}. Pass e.g. 0.1 to hold out 10 %.")
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    if n_test + n_val >= n:
        raise ConfigError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} leave no training samples "
            f"out of {n}. Pass smaller fractions (their sum must stay well below 1)."
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts = perm[n_test + n_val:], perm[n_test:n_test + n_val], perm[:n_test]
    return parts[0].sort().values, parts[1].sort().values, parts[2].sort().values


def assemble(name: str, train: Split, val: Split, test: Split, *, class_names: Sequence[str] = (),
             mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
             pixel_scale: float | None = None) -> DataSplits:
    """Standardise the inputs (per channel; train-split stats unless ``mean``/``std`` are given)
    and wrap the three splits as :class:`DataSplits`; ``num_classes`` is max label + 1 overall.
    ``pixel_scale``: the raw inputs are 8-bit pixels times this (recorded, for edge bundles)."""
    x_train = train[0]
    dims = [0] + list(range(2, x_train.dim()))  # every axis but the channel/feature axis
    shape = [1, x_train.shape[1]] + [1] * (x_train.dim() - 2)
    if mean is None or std is None:
        m = x_train.mean(dim=dims, dtype=torch.float64).float()
        s = x_train.double().std(dim=dims).float() if len(x_train) > 1 else torch.ones_like(m)
    else:
        m, s = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
    scale = 1.0 / torch.where(s > 1e-8, s, torch.ones_like(s)).reshape(shape)
    shift = -m.reshape(shape) * scale
    # NOTE: (x - m) / s as one fused pass: one new tensor per split, however large.
    splits = [TensorDataset(torch.addcmul(shift, x, scale), y.long()) for x, y in (train, val, test)]
    num_classes = 1 + max(int(y.max()) for _, y in (train, val, test) if len(y))
    _warn_label_gaps(name, torch.cat([y.long() for _, y in (train, val, test)]), num_classes)
    safe = torch.where(s > 1e-8, s, torch.ones_like(s))
    return DataSplits(name=name, train=splits[0], val=splits[1], test=splits[2],
                      num_classes=num_classes, input_shape=tuple(x_train.shape[1:]),
                      class_names=tuple(class_names), mean=tuple(float(v) for v in m.flatten()),
                      std=tuple(float(v) for v in safe.flatten()), pixel_scale=pixel_scale)


def _warn_label_gaps(name: str, labels: torch.Tensor, num_classes: int) -> None:
    """Warn when some of the labels 0..num_classes-1 have no sample: labels counted from 1, or a stray
    large label, silently add output classes that are never trained (num_classes is max label + 1)."""
    present = set(labels.unique().tolist())  # NOTE: no tensor of num_classes: a stray label may be huge
    missing = num_classes - len(present)
    if not missing:
        return
    unused: list[int] = []
    for label in range(num_classes):
        if len(unused) == min(missing, 5):
            break
        if label not in present:
            unused.append(label)
    shown = ", ".join(map(str, unused)) + (f", ... ({missing} in all)" if missing > 5 else "")
    warnings.warn(f"Labels of '{name}' are not 0..{num_classes - 1} without gaps: no sample has label {shown}; "
                  f"num_classes is inferred as {num_classes} (largest label + 1). Fix: map the labels to "
                  f"0..K-1 if those classes are not meant.", stacklevel=3)


def from_arrays(x: torch.Tensor, y: torch.Tensor, *, name: str, val_fraction: float = 0.1,
                test_fraction: float = 0.2, seed: int = 0, class_names: Sequence[str] = (),
                pixel_scale: float | None = None) -> DataSplits:
    """Split one float input tensor and its labels deterministically, then :func:`assemble`."""
    train, val, test = split_three(len(x), val_fraction, test_fraction, seed)
    return assemble(name, (x[train], y[train]), (x[val], y[val]), (x[test], y[test]),
                    class_names=class_names, pixel_scale=pixel_scale)


# --- .npz ------------------------------------------------------------------------------------

def load_npz(path: str | PathLike[str], *, val_fraction: float = 0.1, test_fraction: float = 0.2,
             seed: int = 0) -> DataSplits:
    """Load a ``.npz`` of arrays: ``x_train, y_train, x_test, y_test`` (optionally ``x_val, y_val``,
    else ``val_fraction`` of train is held out), or ``x, y`` (split by both fractions).

    Inputs may be ``[N, F]`` features, ``[N, H, W]`` images (a channel axis is added),
    ``[N, C, H, W]``, or ``[N, H, W, C]``. The rule: a 4-D array is channels-last only when its
    last axis is 1 to 4 (grey, grey + alpha, RGB, RGBA) and its axis 1 is not (so ``[N, 3, 32, 32]``
    and ``[N, 1, 28, 1]`` stay channels-first). uint8 inputs are scaled to [0, 1] (8-bit images record
    ``pixel_scale`` 1/255, so an edge bundle reads image files alike). Labels are integer
    class indices; where some of 0..K-1 have no sample (labels from 1, a stray large one) a warning
    says so.
    """
    path = Path(path)
    arrays = _read_npz(path)
    # NOTE: 8-bit images were scaled to [0, 1]: recorded, so an edge bundle reads image files alike
    images = [arrays[k] for k in ("x", "x_train", "x_val", "x_test") if k in arrays]
    scale = 1 / 255 if images and all(a.dtype == np.uint8 and a.ndim in (3, 4) for a in images) else None
    if {"x", "y"} <= arrays.keys() and "x_train" not in arrays:
        x, y = _pair(path, arrays, "x", "y")
        return from_arrays(x, y, name=path.stem, val_fraction=val_fraction,
                           test_fraction=test_fraction, seed=seed, pixel_scale=scale)
    if not {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        raise DataError(
            f"'{path}' has arrays {sorted(arrays) or 'none'}; expected one of these layouts: "
            f"{' | '.join(_NPZ_LAYOUTS)}. Fix: re-save it, e.g. numpy.savez(path, x=images, y=labels)."
        )
    train, test = _pair(path, arrays, "x_train", "y_train"), _pair(path, arrays, "x_test", "y_test")
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise DataError(f"'{path}' has only one of x_val / y_val; expected both or neither. "
                        f"Fix: add the missing array, or drop the other to split val from train.")
    if "x_val" in arrays:
        val = _pair(path, arrays, "x_val", "y_val")
    else:
        keep, held = split_indices(len(train[0]), val_fraction, seed)
        train, val = (train[0][keep], train[1][keep]), (train[0][held], train[1][held])
    for key, (x, _) in (("x_val", val), ("x_test", test)):
        if len(x) and x.shape[1:] != train[0].shape[1:]:
            raise DataError(f"'{path}': expected '{key}' samples of shape {tuple(train[0].shape[1:])} "
                            f"like x_train, found {tuple(x.shape[1:])}. Fix: store every split alike.")
    return assemble(path.stem, train, val, test, pixel_scale=scale)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array in the archive (never unpickled); missing or malformed files raise our errors."""
    fix = "Fix: re-save it with numpy.savez(path, x=..., y=...)."
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise DataNotFoundError(f"Data file '{path}' does not exist. Fix: check the path.") from None
    except IsADirectoryError:
        raise DataError(f"'{path}' is a folder; expected a .npz file. Fix: pass the file's path, or "
                        f"load the folder as images with load_image_folder.") from None
    with f:  # NOTE: our own handle: np.load leaks its handle when a zip turns out to be damaged.
        head = f.read(6)
        if head.startswith(b"\x93NUMPY"):
            raise DataError(f"'{path}': expected a .npz archive of named arrays, found a single .npy "
                            f"array. {fix}")
        if not head.startswith(b"PK"):
            raise DataError(f"'{path}': expected a .npz (zip) archive, found a file without a zip "
                            f"header. {fix}")
        f.seek(0)
        try:
            with np.load(f, allow_pickle=False) as archive:
                return {key: archive[key] for key in archive.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            reason = "an object (pickled) array" if "pickle" in str(exc) else f"a damaged archive ({exc})"
            raise DataError(f"'{path}': expected a .npz archive of numeric arrays, found {reason}. "
                            f"{fix}") from None


def _pair(path: Path, arrays: Mapping[str, np.ndarray], x_key: str, y_key: str) -> Split:
    """Checked (inputs, labels) tensors for one split."""
    x, y = _inputs(path, x_key, arrays[x_key]), _labels(path, y_key, arrays[y_key])
    if len(x) != len(y):
        raise DataError(f"'{path}': expected '{x_key}' and '{y_key}' to have the same length, found "
                        f"{len(x)} and {len(y)}. Fix: store one label per sample.")
    return x, y


# NOTE: the channel counts of image arrays (grey, grey + alpha, RGB, RGBA): a last axis this small is
# channels, not a width, unless axis 1 is as small too
_MAX_CHANNELS_LAST = 4


def _inputs(path: Path, key: str, a: np.ndarray) -> torch.Tensor:
    """float32 ``[N, C, H, W]`` or ``[N, F]``, following the layout rule in :func:`load_npz`."""
    if a.ndim == 0 or a.shape[0] == 0 or a.size == 0:
        raise DataError(f"'{path}': expected a non-empty array '{key}', found shape {a.shape}. "
                        f"Fix: store at least one sample.")
    if a.dtype.kind not in "biuf":
        raise DataError(f"'{path}': expected numeric '{key}', found dtype {a.dtype}. "
                        f"Fix: convert it, e.g. {key}.astype('float32').")
    if a.ndim not in (2, 3, 4):
        raise DataError(f"'{path}': expected '{key}' as [N, F], [N, H, W], [N, C, H, W] or "
                        f"[N, H, W, C], found shape {a.shape}. Fix: reshape it to one of those.")
    x = torch.from_numpy(np.ascontiguousarray(a))
    x = x.float() / 255.0 if a.dtype == np.uint8 else x.float()
    if x.dim() == 3:
        return x.unsqueeze(1)
    if x.dim() == 4 and x.shape[-1] <= _MAX_CHANNELS_LAST < x.shape[1]:
        return x.permute(0, 3, 1, 2).contiguous()
    return x


def _labels(path: Path, key: str, a: np.ndarray) -> torch.Tensor:
    """int64 ``[N]`` class indices, or a DataError saying how to make them."""
    if a.dtype.kind not in "iu":
        raise DataError(f"'{path}': expected integer class labels in '{key}', found dtype {a.dtype}. "
                        f"Fix: store class indices 0..K-1, e.g. {key}.astype('int64').")
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1 or a.size == 0:
        raise DataError(f"'{path}': expected '{key}' as a non-empty 1-D array of class indices, found "
                        f"shape {a.shape}. Fix: store one index per sample (not one-hot rows).")
    if a.min() < 0:
        raise DataError(f"'{path}': expected class indices >= 0 in '{key}', found {a.min()}. "
                        f"Fix: map the labels to 0..K-1.")
    return torch.from_numpy(a.astype(np.int64))


# --- image folder ----------------------------------------------------------------------------

def load_image_folder(path: str | PathLike[str], *, image_size: int | tuple[int, int] | None = None,
                      grayscale: bool | None = None, val_fraction: float = 0.1,
                      test_fraction: float = 0.2, seed: int = 0,
                      fallback_size: tuple[int, int] | None = None) -> DataSplits:
    """Load ``root/<class>/<image>``, or split folders ``root/train/<class>/...`` with ``root/val/``
    (or ``valid/``, ``validation/``) and/or ``root/test/`` beside it: a split that has no folder is
    held out of train (``val_fraction`` or ``test_fraction`` of it); without split folders both are.

    Images are resized to ``image_size`` (an int or ``(h, w)``) when given; otherwise they must all
    share one size, or, where they do not, are resized to ``fallback_size`` (the size the model was
    made for) with a warning. ``grayscale=None`` picks 1 channel when every image has one (8- or 16-bit
    grey, float), else RGB; values are scaled to [0, 1] by their bit depth. Class names are compared
    and sorted in Unicode NFC, so a folder copied through macOS (NFD names) gets the same labels.
    Everything is decoded into memory: meant for small datasets.
    """
    image = require("PIL.Image", pip_name="pillow", extra="images", feature="Loading an image folder")
    root = Path(path)
    if not root.is_dir():
        if not root.exists():
            raise DataNotFoundError(f"Image folder '{root}' does not exist. Fix: check the path.")
        raise DataError(f"'{root}': expected a folder of class subfolders, found a file. "
                        f"Fix: pass the folder that holds one subfolder per class.")
    roots = _split_folders(root) or {"train": root}  # NOTE: a flat folder is all train, split below
    folders = {split: _class_folders(r) for split, r in roots.items()}
    classes = sorted({name for found in folders.values() for name in found})
    if not classes:
        first = next(iter(roots.values()))
        found = "nothing" if not _visible(first) else "only files"
        raise DataError(f"Image folder '{first}': expected one subfolder per class "
                        f"(root/<class>/<image>), found {found}. Fix: sort the images into "
                        f"class subfolders.")
    files = {split: _scan(found, classes) for split, found in folders.items()}
    if len(classes) < 2:  # NOTE: one class trains nothing (cross-entropy is 0); say so before the model does
        raise DataError(f"Image folder '{root}': expected at least 2 class subfolders (root/<class>/<image>), "
                        f"found only '{classes[0]}'. Fix: add a subfolder of images for each other class.")
    size = _target_size(image, [f for part in files.values() for f, _ in part], image_size, fallback_size)
    gray = grayscale if grayscale is not None else _all_gray(image, list(files.values()))
    tensors = {split: _decode(image, part, size, gray) for split, part in files.items()}
    name = root.name
    (x, y), val, test = tensors["train"], tensors.get("val"), tensors.get("test")
    if val is None and test is None:  # NOTE: flat, or train/ alone: val and test are held out of it
        return from_arrays(x, y, name=name, val_fraction=val_fraction, test_fraction=test_fraction,
                           seed=seed, class_names=classes, pixel_scale=1 / 255)
    if val is None or test is None:  # NOTE: the split without a folder is held out of train
        keep, held = split_indices(len(x), val_fraction if val is None else test_fraction, seed)
        x, y, cut = x[keep], y[keep], (x[held], y[held])
        val, test = val or cut, test or cut
    return assemble(name, (x, y), val, test, class_names=classes, pixel_scale=1 / 255)


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def _split_folders(root: Path) -> dict[str, Path]:
    """{"train": ..., optionally "val", "test"} where ``root`` holds split folders, else {} (a flat
    layout). A split folder is one named as a split that holds subfolders: a class folder named
    ``test`` or ``valid`` holds images, so flat folders with such classes keep working."""
    dirs = [d for d in _visible(root) if d.is_dir()]
    splits = [d for d in dirs if d.name in _SPLIT_FOLDERS and any(c.is_dir() for c in _visible(d))]
    if not splits:
        return {}
    expected = f"expected one of these layouts: {_FOLDER_LAYOUTS}"
    others = [d.name for d in dirs if d not in splits]
    if others:
        raise DataError(f"Image folder '{root}' mixes split folders ({', '.join(d.name for d in splits)}) with "
                        f"other folders ({', '.join(others[:3])}); {expected}. Fix: move the other folders "
                        f"into the split folders, or out of '{root}'.")
    out: dict[str, Path] = {}
    for folder in splits:
        split = _SPLIT_FOLDERS[folder.name]
        if split in out:
            raise DataError(f"Image folder '{root}' has both '{out[split].name}' and '{folder.name}'; "
                            f"{expected}. Fix: merge them into one {split} folder.")
        out[split] = folder
    if "train" not in out:
        raise DataError(f"Image folder '{root}' has {', '.join(d.name + '/' for d in splits)} but no train/; "
                        f"{expected}. Fix: add root/train/<class>/<image>, or put the class folders in root.")
    return out


def _class_folders(root: Path) -> dict[str, Path]:
    """{class name in NFC: its folder} for the class subfolders of ``root``."""
    out: dict[str, Path] = {}
    for folder in _visible(root):
        if not folder.is_dir():
            continue
        name = _nfc(folder.name)
        if name in out:  # NOTE: two spellings of one name (NFC and NFD bytes): one class, or a mix-up
            raise DataError(f"Image folder '{root}' has two class folders named '{name}' (the same name in "
                            f"two Unicode forms, NFC and NFD). Fix: merge them into one folder.")
        out[name] = folder
    return out


def _scan(folders: Mapping[str, Path], classes: Sequence[str]) -> list[tuple[Path, int]]:
    """(image file, class index) for every image in the class folders ``folders``, in a stable order."""
    out: list[tuple[Path, int]] = []
    for label, cls in enumerate(classes):
        folder = folders.get(cls)
        if folder is None:
            continue  # NOTE: a class may appear in only some of the split folders.
        images = [p for p in _visible(folder) if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
        if not images:
            raise DataError(f"Class folder '{folder}': expected image files "
                            f"({', '.join(sorted(IMAGE_EXTENSIONS))}), found none. "
                            f"Fix: add images or remove the folder.")
        out += [(p, label) for p in images]
    return out


def _header(image: Any, file: Path) -> tuple[str, tuple[int, int]]:
    """(mode, (width, height)) read from the file header, without decoding the pixels."""
    try:
        with image.open(file) as im:
            return im.mode, im.size
    except (OSError, ValueError) as exc:
        raise DataError(f"Image '{file}': expected a readable image, found {exc}. "
                        f"Fix: re-export the image or delete it.") from None


def _target_size(image: Any, files: Sequence[Path], image_size: int | tuple[int, int] | None,
                 fallback: tuple[int, int] | None = None) -> tuple[int, int]:
    """The (h, w) every image ends up with; without ``image_size`` all images must agree, or be
    resized to ``fallback`` where it is given."""
    if image_size is not None:
        h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if h < 1 or w < 1:
            raise ConfigError(f"image_size must be positive; got {image_size}. Pass e.g. 32 or (32, 32).")
        return int(h), int(w)
    first_w, first_h = _header(image, files[0])[1]
    for file in files[1:]:
        w, h = _header(image, file)[1]
        if (w, h) != (first_w, first_h) and fallback is not None:
            warnings.warn(f"Images differ in size ('{file}' is {h}x{w}, '{files[0]}' {first_h}x{first_w}): all "
                          f"are resized to {fallback[0]}x{fallback[1]}, the size the model was made for. Pass "
                          f"--image-size H[xW] (image_size=) to choose another.", stacklevel=4)
            return int(fallback[0]), int(fallback[1])
        if (w, h) != (first_w, first_h):
            raise DataError(
                f"Image '{file}' is {h}x{w} (HxW), but '{files[0]}' is {first_h}x{first_w}; without "
                f"a size asked for all images must share one. Fix: pass --image-size H[xW] (image_size=(H, W) "
                f"to prunekit.data.load) to resize them all."
            )
    return first_h, first_w


# NOTE: Pillow's single-channel modes: 8-bit, 1-bit, with alpha, 16-bit (PNG, TIFF), 32-bit int and float
_GRAY_MODES = frozenset({"L", "1", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
# NOTE: integer modes wider than 8 bits hold 16-bit samples (Pillow opens 16-bit PNG and TIFF so)
_SIXTEEN_BIT = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


def _all_gray(image: Any, files: Sequence[Sequence[tuple[Path, int]]]) -> bool:
    return all(_header(image, f)[0] in _GRAY_MODES for part in files for f, _ in part)


def _pixels(image: Any, im: Any, size: tuple[int, int] | None, gray: bool) -> np.ndarray:
    """One opened image as float32 ``[H, W]`` (``gray``) or ``[H, W, 3]`` in [0, 1], resized bilinearly
    to ``size`` (h, w) when given: 8-bit samples over 255, 16-bit ones over 65535, float images as they
    are. A 16-bit or float image is resized at its depth and, for RGB, its grey copied to the 3 channels:
    converted to 8-bit "L" or "RGB" first, every value above 255 would be clipped to white."""
    scale = 65535.0 if im.mode in _SIXTEEN_BIT else 1.0 if im.mode == "F" else 255.0
    if scale != 255.0:
        im = im.convert("I").convert("F") if im.mode != "F" else im
    else:
        im = im.convert("L" if gray else "RGB")
    if size is not None and im.size != (size[1], size[0]):
        im = im.resize((size[1], size[0]), image.Resampling.BILINEAR)
    values = np.asarray(im, dtype=np.float32) / scale
    return values if gray or values.ndim == 3 else np.repeat(values[..., None], 3, axis=2)


def _decode(image: Any, part: Sequence[tuple[Path, int]], size: tuple[int, int], gray: bool) -> Split:
    """Decode, convert and resize every image: float32 ``[N, C, H, W]`` in [0, 1] and labels."""
    h, w = size
    pixels = []
    for file, _ in part:
        try:
            with image.open(file) as im:
                pixels.append(_pixels(image, im, size, gray))
        except (OSError, ValueError) as exc:
            raise DataError(f"Image '{file}': expected a readable image, found {exc}. "
                            f"Fix: re-export the image or delete it.") from None
    if not pixels:
        return torch.zeros(0, 1 if gray else 3, h, w), torch.zeros(0, dtype=torch.long)
    x = torch.from_numpy(np.stack(pixels))
    x = x.unsqueeze(1) if gray else x.permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor([label for _, label in part], dtype=torch.long)
