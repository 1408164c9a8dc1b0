"""An edge bundle: one folder a device can run without prunekit or torch.

``model.onnx`` (fp32 or int8), ``predict.py`` (onnxruntime, numpy and Pillow only) and
``manifest.json``: the input's name, shape and dtype, the preprocessing the training data used
(mode and size, pixel scale of 8- and 16-bit samples, per-channel mean and std), the class labels,
the measured metric and latency, and the sha256 of every other file, which ``predict.py`` checks
before it runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prunekit.errors import ConfigError

__all__ = ["BUNDLE_FORMAT", "check_folder", "write_bundle", "sha256"]

BUNDLE_FORMAT = "prunekit.bundle"
_SCRIPT = Path(__file__).with_name("predict_script.py")


def sha256(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_folder(folder: str | os.PathLike[str]) -> Path:
    """``folder`` as a Path if a bundle may be written there (it does not exist, or is an empty folder),
    else the one-line error; commands call it before any work, so a refusal costs nothing."""
    target = Path(folder)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"bundle: '{target}' already exists and is not an empty folder; nothing is "
                          f"overwritten. Pass a new folder, or delete this one first.")
    return target


def write_bundle(onnx_file: str | os.PathLike[str], folder: str | os.PathLike[str], *, input_name: str,
                 input_shape: Sequence[int], mean: Sequence[float], std: Sequence[float], pixel_scale: float,
                 labels: Sequence[str] = (), precision: str = "fp32",
                 measured: Mapping[str, Any] | None = None) -> Path:
    """Write the bundle folder (see the module docstring) and return it.

    Args:
        onnx_file: the model, copied as ``model.onnx``; its first input takes ``[N, C, H, W]`` float32.
        input_shape: ``(C, H, W)`` of one image; 1 channel means greyscale ("L"), 3 RGB.
        mean, std: per-channel, in units of ``8-bit pixel * pixel_scale``; 16-bit grey images are
            read on the same [0, 1] scale (``pixel_scale * 255 / 65535``; for an RGB model in every
            channel), as prunekit's image-folder loader reads them.
        measured: numbers to record (metric on the eval data, latency), JSON-ready.
    ``folder`` must not exist yet or be empty: nothing is overwritten. It appears only when complete.
    """
    target = check_folder(folder)
    channels = int(input_shape[0])
    if len(input_shape) != 3 or channels not in (1, 3) or len(mean) != channels or len(std) != channels:
        raise ConfigError(f"bundle: expected image inputs (C, H, W) with C 1 or 3 and one mean and std per "
                          f"channel; got shape {tuple(input_shape)}, {len(mean)} means, {len(std)} stds. "
                          f"Bundle an image classifier trained on image data (an image folder, fashion-mnist).")
    manifest = {
        "format": BUNDLE_FORMAT, "version": 1, "model": "model.onnx", "precision": precision,
        "input": {"name": input_name, "shape": ["batch", *map(int, input_shape)], "dtype": "float32",
                  "layout": "NCHW"},
        "preprocessing": {"mode": "L" if channels == 1 else "RGB", "resize": [int(input_shape[1]), int(input_shape[2])],
                          "resample": "bilinear", "pixel_scale": float(pixel_scale),
                          "pixel_scale_16bit": float(pixel_scale) * 255 / 65535,
                          "mean": [float(v) for v in mean], "std": [float(v) for v in std],
                          "formula": "(pixel * pixel_scale - mean) / std, per channel; greyscale 16-bit samples "
                                     "(modes I, I;16) times pixel_scale_16bit, float (F) samples as they are"},
        "labels": list(labels), "measured": dict(measured or {}), "checksums": {},
        "requires": ["onnxruntime", "numpy", "Pillow"],
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as tmp:
        staged = Path(tmp) / "bundle"
        staged.mkdir()
        shutil.copyfile(onnx_file, staged / "model.onnx")
        shutil.copyfile(_SCRIPT, staged / "predict.py")
        manifest["checksums"] = {name: sha256(staged / name) for name in ("model.onnx", "predict.py")}
        (staged / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if target.exists():
            target.rmdir()  # NOTE: an empty folder only (checked above).
        os.replace(staged, target)
    return target
