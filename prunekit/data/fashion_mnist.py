"""Fashion-MNIST (Zalando; 60,000 train + 10,000 test 28x28 greyscale images, 10 classes).

The four IDX files are read from, in order: the ``data_dir`` argument, ``$PRUNEKIT_DATA``, or
``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist`` package). Nothing is
downloaded: a missing file raises an error that says how to get it.
"""

from __future__ import annotations

import functools
import os
from os import PathLike
from pathlib import Path

import numpy as np
import torch

from prunekit.data.base import DataSplits, split_indices
from prunekit.data.custom import assemble
from prunekit.data.idx import read_idx
from prunekit.errors import DataError, DataNotFoundError

__all__ = ["CLASS_NAMES", "DEFAULT_DIR", "ENV_VAR", "MEAN", "STD", "load_fashion_mnist", "resolve_dir"]

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "PRUNEKIT_DATA"
MEAN, STD = 0.2860, 0.3530  # of the 60,000 training images, scaled to [0, 1]
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_FIX = ("install the Debian package with `sudo apt-get install dataset-fashion-mnist` (or run "
        "`make demo`, which installs it), or put the four IDX files ({files}) in a folder and pass "
        "`--data-dir DIR` / set `PRUNEKIT_DATA=DIR`")
_FIX_CORRUPT = ("re-install dataset-fashion-mnist (`sudo apt-get install --reinstall dataset-fashion-mnist`) "
                "or re-download the file")


def load_fashion_mnist(*, data_dir: str | PathLike[str] | None = None, val_fraction: float = 0.1,
                       seed: int = 0) -> DataSplits:
    """Train/val/test splits (54,000/6,000/10,000 by default) of float32 ``[N, 1, 28, 28]`` images
    normalised with the dataset's mean and std; val is a seeded, deterministic slice of train."""
    folder, source = resolve_dir(data_dir)
    paths = {key: _find(folder, source, stem) for key, stem in FILES.items()}
    stamp = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths.values())
    images, labels, test_images, test_labels = _decoded(str(folder), stamp)
    keep, held = split_indices(len(images), val_fraction, seed)

    def part(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        # NOTE: index the (read-only, cached) uint8 arrays first, and fold the /255 into mean/std,
        # so each split costs one float conversion and one fused normalisation.
        return torch.from_numpy(x).unsqueeze(1).float(), torch.from_numpy(y).long()

    return assemble("fashion_mnist", part(images[keep.numpy()], labels[keep.numpy()]),
                    part(images[held.numpy()], labels[held.numpy()]),
                    part(test_images.copy(), test_labels.copy()),
                    class_names=CLASS_NAMES, mean=(MEAN * 255,), std=(STD * 255,), pixel_scale=1.0)


def resolve_dir(data_dir: str | PathLike[str] | None = None) -> tuple[Path, str]:
    """The folder to read and where that choice came from (for error messages)."""
    if data_dir is not None:
        return Path(data_dir).expanduser(), "the data_dir argument / --data-dir"
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser(), f"${ENV_VAR}"
    return DEFAULT_DIR, "the default location"


def _find(folder: Path, source: str, stem: str) -> Path:
    """``stem.gz`` or ``stem`` in ``folder``, or the error that says how to get it."""
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    where = (f"in '{folder}' (from {source})" if folder.is_dir()
             else f"in folder '{folder}' (from {source}), which does not exist")
    raise DataNotFoundError(
        f"Fashion-MNIST: expected the file '{stem}.gz' (or '{stem}') {where}; it is missing. Fix: "
        + _FIX.format(files=", ".join(f"{s}.gz" for s in FILES.values())) + "."
    )


@functools.lru_cache(maxsize=2)
def _decoded(folder: str, stamp: tuple[tuple[str, int, int], ...]) -> tuple[np.ndarray, ...]:
    """Decoded, checked (train images, train labels, test images, test labels), cached per folder
    and file mtimes/sizes so repeated loads in one process cost only the float conversion."""
    del folder  # NOTE: part of the cache key only; the paths in `stamp` are what is read.
    arrays = tuple(read_idx(path, fix=_FIX_CORRUPT) for path, _, _ in stamp)
    for (images, labels), (img_path, lbl_path) in zip(
        (arrays[:2], arrays[2:]), ((stamp[0][0], stamp[1][0]), (stamp[2][0], stamp[3][0]))
    ):
        _check(images, labels, img_path, lbl_path)
    for a in arrays:
        a.flags.writeable = False  # shared by every caller through the cache
    return arrays


def _check(images: np.ndarray, labels: np.ndarray, img_path: str, lbl_path: str) -> None:
    """Shapes, dtypes, matching counts and label range, each failure naming the file to fix."""
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"IDX file '{img_path}': expected uint8 images of shape [N, 28, 28], found "
                        f"{images.dtype} {images.shape}. Fix: {_FIX_CORRUPT}.")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(f"IDX file '{lbl_path}': expected a 1-D uint8 label array, found "
                        f"{labels.dtype} {labels.shape}. Fix: {_FIX_CORRUPT}.")
    if len(images) != len(labels):
        raise DataError(f"IDX files '{img_path}' and '{lbl_path}': expected as many labels as images, "
                        f"found {len(images)} images and {len(labels)} labels. Fix: {_FIX_CORRUPT} "
                        f"(the two files must come from the same release).")
    if len(labels) and labels.max() > 9:
        raise DataError(f"IDX file '{lbl_path}': expected labels in 0..9, found {labels.max()}. "
                        f"Fix: {_FIX_CORRUPT}.")
