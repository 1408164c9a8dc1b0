"""Datasets in: a registered name ("fashion-mnist", "digits"), a ``.npz`` file, or an image folder.
Out: :class:`DataSplits` (normalised train/val/test tensors) and seeded whole-batch loaders.
"""

from __future__ import annotations

import inspect
import os
from os import PathLike
from pathlib import Path

from prunekit.data.base import DataSplits, make_loader, set_epoch, split_indices
from prunekit.data.custom import load_image_folder, load_npz
from prunekit.data.digits import load_digits
from prunekit.data.fashion_mnist import load_fashion_mnist
from prunekit.errors import ConfigError, DataError, DataNotFoundError, UnknownNameError, did_you_mean
from prunekit.registry import Registry

__all__ = [
    "DATASETS",
    "DataSplits",
    "create",
    "load",
    "load_digits",
    "load_fashion_mnist",
    "load_image_folder",
    "load_npz",
    "make_loader",
    "names",
    "set_epoch",
    "split_indices",
]

DATASETS: Registry[DataSplits] = Registry("dataset", list_hint="`prunekit datasets` lists them all")
DATASETS.add("fashion_mnist", load_fashion_mnist,
             description="Fashion-MNIST: 70,000 28x28 greyscale clothing images, 10 classes "
                         "(Debian package dataset-fashion-mnist)")
DATASETS.add("digits", load_digits,
             description="scikit-learn digits: 1,797 8x8 greyscale handwritten digits, 10 classes "
                         "(bundled with scikit-learn)")

_FORMS = ("a registered name ({names}; `prunekit datasets` lists them all), a path to a .npz file, "
          "or a path to an image folder (root/<class>/<image>)")


def create(name: str, **kwargs: object) -> DataSplits:
    """Load the registered dataset ``name`` (hyphens allowed) with the loader's own ``kwargs``."""
    return DATASETS.create(name, **kwargs)


def names(pattern: str = "*") -> list[str]:
    """Sorted registered dataset names matching a shell-style ``pattern``."""
    return DATASETS.names(pattern)


def load(spec: str | PathLike[str], *, data_dir: str | PathLike[str] | None = None,
         val_fraction: float = 0.1, seed: int = 0,
         image_size: int | tuple[int, int] | None = None) -> DataSplits:
    """Load whatever ``spec`` names: a registered dataset, a ``.npz`` file, or an image folder.

    Registered names win over same-named local paths. ``data_dir`` goes only to datasets that take
    it (fashion_mnist); ``image_size`` is an error where it cannot apply.
    """
    text = os.fspath(spec)
    if text in DATASETS:
        factory = DATASETS.get(text).factory
        params = inspect.signature(factory).parameters
        kwargs: dict[str, object] = {"val_fraction": val_fraction, "seed": seed}
        if data_dir is not None and "data_dir" in params:
            kwargs["data_dir"] = data_dir
        if image_size is not None:
            if "image_size" not in params:
                raise ConfigError(f"Dataset '{text}' has a fixed image size; image_size={image_size} "
                                  f"applies only to image folders. Fix: drop image_size / --image-size.")
            kwargs["image_size"] = image_size
        return factory(**kwargs)
    path = Path(text).expanduser()
    if path.is_dir():
        return load_image_folder(path, image_size=image_size, val_fraction=val_fraction, seed=seed)
    if path.suffix.lower() == ".npz":
        if image_size is not None:
            raise ConfigError(f"'{path}': image_size applies only to image folders, not .npz files. "
                              f"Fix: drop image_size / --image-size, or resize the arrays yourself.")
        return load_npz(path, val_fraction=val_fraction, seed=seed)
    forms = _FORMS.format(names=", ".join(names()))
    if path.exists():
        raise DataError(f"'{path}': expected {forms}; found a '{path.suffix}' file. "
                        f"Fix: save the arrays with numpy.savez(path, x=..., y=...).")
    if "/" in text or os.sep in text:
        raise DataNotFoundError(f"Dataset path '{path}' does not exist. Accepted: {forms}. "
                                f"Fix: check the path.")
    hint = did_you_mean(text.replace("-", "_"), names())
    raise UnknownNameError(f"Unknown dataset '{text}'.{hint} Accepted: {forms}.")
