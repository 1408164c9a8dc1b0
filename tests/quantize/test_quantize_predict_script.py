"""A bundle's ``predict.py`` reads an image file exactly as prunekit's image-folder loader does (every
Pillow mode, 8- and 16-bit depth, resizing), so it gives the PyTorch model's probabilities."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from prunekit.data.custom import _decode, load_image_folder
from prunekit.quantize import predict_script, write_bundle
from prunekit.workflows import Measure
from prunekit.workflows.export import export

_H, _W = 12, 16


def _probes(folder: Path) -> list[Path]:
    """One file per Pillow mode a user's images come in, some at another size than the model's."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (_H, _W, 3), dtype=np.uint8)
    wide = rng.integers(0, 65536, (_H + 5, _W - 3), dtype=np.uint16)
    images = {
        "rgb.png": Image.fromarray(rgb), "rgb-small.jpg": Image.fromarray(rgb[::2, ::2]),
        "rgba.png": Image.fromarray(np.dstack([rgb, rgb[..., :1]]), "RGBA"),
        "p.png": Image.fromarray(rgb).convert("P"), "l.png": Image.fromarray(rgb).convert("L"),
        "la.png": Image.fromarray(rgb).convert("LA"), "bilevel.png": Image.fromarray(rgb).convert("1"),
        "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"), "i16.png": Image.fromarray(wide),
        "i32.tif": Image.fromarray(wide.astype(np.int32)), "f.tif": Image.fromarray(wide / np.float32(65535)),
    }
    paths = []
    for name, image in images.items():
        image.save(folder / name)
        paths.append(folder / name)
    return paths


@pytest.mark.parametrize("channels", [1, 3], ids=["grey", "rgb"])
def test_predict_reads_every_mode_as_the_loader(tmp_path: Path, channels: int) -> None:
    files = _probes(tmp_path)
    modes = {Image.open(f).mode for f in files}
    assert {"RGB", "RGBA", "P", "L", "LA", "1", "CMYK", "I;16", "I", "F"} <= modes
    (tmp_path / "model.bin").write_bytes(b"not read here")
    write_bundle(tmp_path / "model.bin", tmp_path / "bundle", input_name="input", input_shape=(channels, _H, _W),
                 mean=[0.0] * channels, std=[1.0] * channels, pixel_scale=1 / 255)
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    for file in files:
        loader = _decode(Image, [(file, 0)], (_H, _W), channels == 1)[0][0].numpy()
        script = predict_script.prepare(str(file), manifest)
        assert script.dtype == np.float32 and script.shape == (channels, _H, _W)
        assert np.array_equal(script, loader), (file.name, float(np.abs(script - loader).max()))


class _Brightness(nn.Module):
    """Scores its input's brightness (so a clipped or rescaled image changes the answer)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 4, 3)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).mean((2, 3)))


def _folder(root: Path, kind: str) -> Path:
    """Two classes of dark and bright images: 8-bit RGB, 8-bit grey or 16-bit grey PNGs."""
    rng = np.random.default_rng(1)
    for label, level in (("dark", 0.2), ("bright", 0.8)):
        (root / label).mkdir(parents=True)
        for i in range(6):
            values = np.clip(rng.normal(level, 0.15, (_H, _W, 3) if kind == "rgb" else (_H, _W)), 0, 1)
            array = (values * 65535).astype(np.uint16) if kind == "grey16" else (values * 255).astype(np.uint8)
            Image.fromarray(array).save(root / label / f"{i}.png")
    return root


@pytest.mark.parametrize("kind", ["rgb", "grey", "grey16"])
def test_bundle_gives_the_models_probabilities(tmp_path: Path, kind: str) -> None:
    images = _folder(tmp_path / "images", kind)
    splits = load_image_folder(images, val_fraction=0.2, test_fraction=0.2)
    channels = 3 if kind == "rgb" else 1
    assert splits.input_shape == (channels, _H, _W)
    torch.manual_seed(0)
    model = _Brightness(channels).eval()
    bundle = tmp_path / "bundle"
    export(model, splits, out_dir=tmp_path / "out", onnx=False, bundle=bundle,
           measure=Measure(batch_sizes=(1,), min_time_s=0, threads=1))
    files = sorted(images.rglob("*.png"))
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    run = subprocess.run([sys.executable, "-I", str(bundle / "predict.py"), *map(str, files)], capture_output=True,
                         text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [line.split("\t") for line in run.stdout.strip().splitlines()]
    x = _decode(Image, [(f, 0) for f in files], (_H, _W), channels == 1)[0]
    x = (x - torch.tensor(splits.mean).view(1, -1, 1, 1)) / torch.tensor(splits.std).view(1, -1, 1, 1)
    with torch.no_grad():
        probabilities = torch.softmax(model(x), 1)
    expected = [(str(f), splits.class_names[int(p.argmax())], float(p.max())) for f, p in zip(files, probabilities)]
    assert [(path, label) for path, label, _ in rows] == [(path, label) for path, label, _ in expected]
    assert [float(p) for _, _, p in rows] == pytest.approx([p for _, _, p in expected], abs=1e-4)
