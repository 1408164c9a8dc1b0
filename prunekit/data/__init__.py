"""Datasets in: a registered name ("fashion-mnist", "digits"), a ``.npz`` file, an image folder, a
``datasets.load_from_disk`` folder, or a plain text file (tokenised with the model's tokenizer).
Out: :class:`DataSplits` (normalised train/val/test tensors, also as DataLoaders through
:meth:`DataSplits.loaders`) or :class:`Loaders` (iterables of batches, e.g. causal LM token blocks).
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
from prunekit.data.loaders import Loaders, TensorBatches
from prunekit.data.saved_dataset import is_dataset_folder, load_dataset_folder
from prunekit.data.text import load_text, load_tokenizer
from prunekit.errors import ConfigError, DataError, DataNotFoundError, UnknownNameError, did_you_mean
from prunekit.registry import Registry

__all__ = [
    "DATASETS",
    "DataSplits",
    "Loaders",
    "TensorBatches",
    "TEXT_SUFFIXES",
    "create",
    "is_dataset_folder",
    "load",
    "load_dataset_folder",
    "load_digits",
    "load_fashion_mnist",
    "load_image_folder",
    "load_npz",
    "load_text",
    "load_tokenizer",
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
          "an image folder (root/<class>/<image>), a datasets.save_to_disk folder, or a text file "
          "(.txt, with a tokenizer)")
TEXT_SUFFIXES = (".txt", ".text", ".md")


def create(name: str, **kwargs: object) -> DataSplits:
    """Load the registered dataset ``name`` (hyphens allowed) with the loader's own ``kwargs``."""
    return DATASETS.create(name, **kwargs)


def names(pattern: str = "*") -> list[str]:
    """Sorted registered dataset names matching a shell-style ``pattern``."""
    return DATASETS.names(pattern)


def load(spec: str | PathLike[str], *, data_dir: str | PathLike[str] | None = None,
         val_fraction: float = 0.1, seed: int = 0,
         image_size: int | tuple[int, int] | None = None, tokenizer: object = None,
         block_size: int = 128, batch_size: int = 8,
         fallback_size: tuple[int, int] | None = None) -> DataSplits | Loaders:
    """Load whatever ``spec`` names: a registered dataset, a ``.npz`` file, an image folder, a
    ``datasets.save_to_disk`` folder, or a text file.

    Registered names win over same-named local paths. ``data_dir`` goes only to datasets that take
    it (fashion_mnist); ``image_size`` is an error where it cannot apply. Text (a ``.txt`` file, or
    a saved dataset with a text column) needs ``tokenizer`` (the model's folder or a tokenizer)
    and gives :class:`Loaders` of ``block_size``-token blocks in batches of ``batch_size``;
    everything else gives :class:`DataSplits`. ``fallback_size`` (the size the model was made for)
    is what an image folder's images are resized to where they differ in size and no ``image_size``
    is given.
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
                                  f"applies only to image folders. Fix: drop image_size.")
            kwargs["image_size"] = image_size
        return factory(**kwargs)
    path = Path(text).expanduser()
    if path.is_dir() and is_dataset_folder(path):
        return load_dataset_folder(path, tokenizer=tokenizer, block_size=block_size,
                                   batch_size=batch_size, val_fraction=val_fraction, seed=seed,
                                   image_size=image_size)
    if path.is_dir():
        return load_image_folder(path, image_size=image_size, val_fraction=val_fraction, seed=seed,
                                 fallback_size=fallback_size)
    if path.suffix.lower() in TEXT_SUFFIXES and path.is_file():
        if tokenizer is None:
            raise ConfigError(f"'{path}' is a text file; expected a tokenizer to tokenise it (the "
                              f"model's own); got none. Fix: pass the folder its tokenizer was saved in "
                              f"(--tokenizer FOLDER; tokenizer= in Python), or 'bytes' to read the text as "
                              f"UTF-8 bytes (a vocabulary of 256) for a model of your own.")
        return load_text(path, tokenizer, block_size=block_size, batch_size=batch_size,
                         val_fraction=val_fraction, seed=seed)
    if path.suffix.lower() == ".npz":
        if image_size is not None:
            raise ConfigError(f"'{path}': image_size applies only to image folders, not .npz files. "
                              f"Fix: drop image_size, or resize the arrays yourself.")
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
