"""Classify image files with the ONNX model beside this script: ``python predict.py IMAGE...``.

Standalone: needs only onnxruntime, numpy and Pillow (no torch, no prunekit). It checks every file
against the sha256 sums in manifest.json, prepares each image as the training data was prepared
(mode, bit depth, size, pixel scale, per-channel mean and std from the manifest), and prints one line per
image: the file, the label and its probability. A file that cannot be read as an image gets one line
on stderr saying why; the others are still classified, and the exit status is 1.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime
from PIL import Image, UnidentifiedImageError

HERE = Path(__file__).resolve().parent


def verify(manifest: dict) -> None:
    """Stop with a message when a file is missing or differs from the manifest's sha256."""
    for name, expected in manifest["checksums"].items():
        file = HERE / name
        if not file.is_file():
            sys.exit(f"predict.py: '{name}' is missing from {HERE}; copy the whole bundle folder.")
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        if digest != expected:
            sys.exit(f"predict.py: '{name}' does not match its sha256 in manifest.json (got {digest[:12]}..., "
                     f"expected {expected[:12]}...); the bundle was changed or damaged. Copy it again.")


# NOTE: as prunekit's image-folder loader (prunekit/data/custom.py) reads files: Pillow's single-channel
# modes wider than 8 bits hold 16-bit samples, "F" holds floats taken as they are.
SIXTEEN_BIT = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


def pixels(file: Image.Image, height: int, width: int, channels: int, steps: dict) -> np.ndarray:
    """One opened image as float32 ``[H, W]`` (greyscale) or ``[H, W, 3]`` (RGB) on the training data's
    scale, decoded as prunekit's loader decodes it: 8-bit samples times ``pixel_scale``, 16-bit samples
    times ``pixel_scale_16bit`` (converting them to 8-bit "L" or "RGB" would clip every value above 255
    to white), float images as they are; resized bilinearly at that depth, and a 16-bit or float grey
    image's values copied to the 3 channels of an RGB model."""
    deep = file.mode in SIXTEEN_BIT or file.mode == "F"
    if deep:
        image = file if file.mode == "F" else file.convert("I").convert("F")
    else:
        image = file.convert("L" if channels == 1 else "RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    if deep and file.mode == "F":
        values = np.asarray(image, dtype=np.float32)
    else:
        # NOTE: divide as the training pipeline did (samples / 255.0 or / 65535.0 in float32), bit for bit.
        scale = steps["pixel_scale_16bit"] if deep else steps["pixel_scale"]
        values = np.asarray(image, dtype=np.float32) / np.float32(1.0 / scale)
    return values if channels == 1 or values.ndim == 3 else np.repeat(values[..., None], 3, axis=2)


def prepare(path: str, spec: dict) -> np.ndarray:
    """One image as the model's input ``[C, H, W]`` float32."""
    channels, height, width = spec["input"]["shape"][1:]
    steps = spec["preprocessing"]
    with Image.open(path) as file:
        values = pixels(file, height, width, channels, steps)
    values = values[None] if channels == 1 else values.transpose(2, 0, 1)
    std = np.asarray(steps["std"], dtype=np.float32).reshape(-1, 1, 1)
    scale = np.float32(1.0) / std
    shift = -np.asarray(steps["mean"], dtype=np.float32).reshape(-1, 1, 1) * scale
    return values * scale + shift


def unreadable(path: str, error: Exception) -> str:
    """One line saying why ``path`` could not be used as an image, and what to do."""
    if isinstance(error, FileNotFoundError):
        why = "no such file; check the path"
    elif isinstance(error, IsADirectoryError):
        why = "it is a folder; pass the image files in it"
    elif isinstance(error, PermissionError):
        why = "permission denied; make the file readable"
    elif isinstance(error, UnidentifiedImageError):
        why = "not an image Pillow can read (damaged, empty or another format); skip it or save it again as PNG or JPEG"
    else:
        why = f"{error}; skip it or save it again as PNG or JPEG"
    return f"predict.py: cannot read '{path}': {why}"


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python predict.py IMAGE [IMAGE ...]", file=sys.stderr)
        return 2
    manifest = json.loads((HERE / "manifest.json").read_text())
    verify(manifest)
    # NOTE: one bad file must not stop the batch: say why on stderr, classify the rest, exit 1.
    paths, images = [], []
    for path in argv:
        try:
            images.append(prepare(path, manifest))
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            print(unreadable(path, error), file=sys.stderr)
        else:
            paths.append(path)
    if not images:
        return 1
    session = onnxruntime.InferenceSession(str(HERE / manifest["model"]), providers=["CPUExecutionProvider"])
    logits = session.run(None, {manifest["input"]["name"]: np.stack(images)})[0]
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    labels = manifest["labels"]
    for path, row in zip(paths, probabilities):
        best = int(row.argmax())
        print(f"{path}\t{labels[best] if best < len(labels) else best}\t{row[best]:.4f}")
    return 0 if len(paths) == len(argv) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
