"""A local Hugging Face ``datasets`` folder (written by ``Dataset.save_to_disk``), read with
``datasets.load_from_disk`` (an optional extra, imported only here, only when used).

The columns say what the data is for:

- an image column (``Image`` feature, or named image/img) and an integer label column
  (``ClassLabel``, or named label/labels) -> image classification: in-memory :class:`DataSplits`,
  standardised like an image folder;
- a text column (named text, or the only string column) -> causal LM token blocks tokenised with
  the model's tokenizer, as :func:`~prunekit.data.text.load_text` makes from a file;
- an ``input_ids`` column of token id lists -> causal LM token blocks as they are.

A ``DatasetDict`` keeps its own splits (train; validation/val/valid; test); a single Dataset is
split here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunekit.data.base import DataSplits, split_indices
from prunekit.data.custom import _GRAY_MODES, _pixels, assemble, from_arrays
from prunekit.data.loaders import Loaders
from prunekit.data.text import load_tokenizer, text_loaders, to_blocks, tokenize_lines
from prunekit.errors import ConfigError, DataError, path_error, require

__all__ = ["is_dataset_folder", "load_dataset_folder"]

_IMAGE_NAMES, _LABEL_NAMES = ("image", "img", "pixel_values"), ("label", "labels", "fine_label")
_VAL_NAMES = ("validation", "val", "valid")


def is_dataset_folder(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` holds what ``save_to_disk`` writes (a Dataset or a DatasetDict)."""
    folder = Path(path)
    return (folder / "dataset_dict.json").is_file() or (
        (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file())


def load_dataset_folder(path: str | os.PathLike[str], *, tokenizer: Any = None,
                        block_size: int = 128, batch_size: int = 8, val_fraction: float = 0.1,
                        test_fraction: float = 0.2, seed: int = 0,
                        image_size: int | tuple[int, int] | None = None) -> DataSplits | Loaders:
    """Load a ``save_to_disk`` folder: DataSplits for image/label columns, Loaders of token blocks
    for a text (needs ``tokenizer``: the model's folder or a tokenizer) or ``input_ids`` column."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise path_error(folder, "a dataset folder (datasets.save_to_disk)", "Fix: check the path.")
    if not is_dataset_folder(folder):
        raise DataError(f"'{folder}' is not a saved datasets folder (no dataset_dict.json, or "
                        f"state.json + dataset_info.json). Fix: write it with "
                        f"Dataset.save_to_disk('{folder}').")
    datasets = require("datasets", extra="datasets", feature="Loading a datasets.load_from_disk folder")
    loaded = datasets.load_from_disk(str(folder))
    splits = _splits(loaded, folder)
    first = splits["train"]
    image, label = _find(first, _IMAGE_NAMES, datasets.Image), _label_column(first, datasets)
    if image is not None and label is not None:
        return _image_splits(folder, splits, image, label, image_size=image_size,
                             val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    text = _text_column(first)
    if text is None and "input_ids" not in first.column_names:
        raise DataError(f"'{folder}' has columns {first.column_names}; expected image + label "
                        f"columns (classification), a text column, or input_ids (language "
                        f"modelling). Fix: rename the columns, e.g. dataset.rename_column(...).")
    tok = None
    if text is not None:
        if tokenizer is None:
            raise ConfigError(f"'{folder}' holds text (column '{text}'); expected a tokenizer to "
                              f"tokenise it; got none. Fix: pass tokenizer=<the model's folder>.")
        tok = load_tokenizer(tokenizer)
    return _token_loaders(folder, splits, text, tok, block_size=block_size, batch_size=batch_size,
                          val_fraction=val_fraction, seed=seed)


def _splits(loaded: Any, folder: Path) -> dict[str, Any]:
    """{"train": ..., optionally "val", "test"} from a Dataset or DatasetDict."""
    if not hasattr(loaded, "keys"):
        if len(loaded) == 0:
            raise DataError(f"'{folder}' holds an empty dataset; expected rows. Fix: save some data.")
        return {"train": loaded}
    names = list(loaded.keys())
    if "train" not in names:
        raise DataError(f"'{folder}' has splits {names}; expected a 'train' split. Fix: save a "
                        f"DatasetDict with train (and validation/test) splits.")
    out = {"train": loaded["train"]}
    val = next((n for n in _VAL_NAMES if n in names), None)
    if val is not None:
        out["val"] = loaded[val]
    if "test" in names:
        out["test"] = loaded["test"]
    return out


def _find(dataset: Any, names: tuple[str, ...], feature_type: Any) -> str | None:
    for column, feature in dataset.features.items():
        if isinstance(feature, feature_type):
            return str(column)
    return next((n for n in names if n in dataset.column_names), None)


def _label_column(dataset: Any, datasets: Any) -> str | None:
    return _find(dataset, _LABEL_NAMES, datasets.ClassLabel)


def _text_column(dataset: Any) -> str | None:
    strings = [c for c, f in dataset.features.items() if getattr(f, "dtype", None) == "string"]
    if "text" in strings:
        return "text"
    return strings[0] if len(strings) == 1 else None


def _images(folder: Path, dataset: Any, column: str, label: str, size: tuple[int, int] | None,
            gray: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 ``[N, C, H, W]`` in [0, 1] and int64 labels of one split."""
    image = require("PIL.Image", pip_name="pillow", extra="images", feature="Decoding images")
    pixels = []
    for index, im in enumerate(dataset[column]):
        if not isinstance(im, image.Image):
            raise DataError(f"'{folder}': row {index} of column '{column}' is {type(im).__name__}; "
                            f"expected an image. Fix: cast the column to datasets.Image().")
        pixels.append(_pixels(image, im, size, gray))  # NOTE: as an image folder's files are decoded
    shapes = {p.shape for p in pixels}
    if len(shapes) > 1:
        raise DataError(f"'{folder}': images in '{column}' have several sizes {sorted(shapes)[:3]}; "
                        f"expected one. Fix: pass --image-size H[xW] (image_size=(H, W) to "
                        f"prunekit.data.load) to resize them all.")
    x = torch.from_numpy(np.stack(pixels))
    x = x.unsqueeze(1) if gray else x.permute(0, 3, 1, 2).contiguous()
    y = torch.tensor([int(v) for v in dataset[label]], dtype=torch.long)
    if len(y) and int(y.min()) < 0:
        raise DataError(f"'{folder}': labels in '{label}' must be class indices >= 0; found "
                        f"{int(y.min())}. Fix: map the labels to 0..K-1.")
    return x, y


def _image_splits(folder: Path, splits: dict[str, Any], image: str, label: str, *,
                  image_size: int | tuple[int, int] | None, val_fraction: float,
                  test_fraction: float, seed: int) -> DataSplits:
    size = (image_size, image_size) if isinstance(image_size, int) else image_size
    gray = all(im.mode in _GRAY_MODES for part in splits.values() for im in part[image])
    parts = {name: _images(folder, part, image, label, size, gray) for name, part in splits.items()}
    feature = splits["train"].features[label]
    names = tuple(getattr(feature, "names", None) or ())
    if len(parts) == 1:
        x, y = parts["train"]
        return from_arrays(x, y, name=folder.name, val_fraction=val_fraction, test_fraction=test_fraction,
                           seed=seed, class_names=names, pixel_scale=1 / 255)
    train = parts["train"]
    if "val" not in parts:
        keep, held = split_indices(len(train[0]), val_fraction, seed)
        train, parts["val"] = (train[0][keep], train[1][keep]), (train[0][held], train[1][held])
    empty = (train[0][:0], train[1][:0])
    # NOTE: pixel_scale: the raw values are 8-bit samples / 255, as an image folder's (an edge bundle and
    # a model's recorded mean/std rely on it)
    return assemble(folder.name, train, parts["val"], parts.get("test", empty), class_names=names,
                    pixel_scale=1 / 255)


def _ids_of(part: Any, text: str | None, tok: Any) -> list[int]:
    if text is None:
        return [int(t) for row in part["input_ids"] for t in row]
    lines = [line for row in part[text] if row for line in str(row).splitlines(keepends=True)]
    return tokenize_lines(tok, lines)


def _token_loaders(folder: Path, splits: dict[str, Any], text: str | None, tok: Any, *,
                   block_size: int, batch_size: int, val_fraction: float, seed: int) -> Loaders:
    ids = _ids_of(splits["train"], text, tok)
    if not ids:
        raise DataError(f"'{folder}' gave no tokens; expected text or token ids in its train split. "
                        f"Fix: check the '{text or 'input_ids'}' column.")
    if "val" in splits:
        train, _ = to_blocks(ids, block_size, 0.0, folder)
        val, _ = to_blocks(_ids_of(splits["val"], text, tok), block_size, 0.0, folder)
    else:
        train, val = to_blocks(ids, block_size, val_fraction, folder)
    vocab = len(tok) if tok is not None and hasattr(tok, "__len__") else None
    return text_loaders(folder.name, train, val, batch_size=batch_size, seed=seed,
                        info={"vocab_size": vocab, "tokens": len(ids), "tokenizer": tok})
