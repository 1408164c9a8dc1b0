"""`prunekit export --bundle` of a saved folder: the bundle reads images at the size the model was
trained at, whatever size the export data has, and a taken bundle folder is refused before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prunekit import load
from prunekit.cli import main
from prunekit.data.custom import _decode



def _images(root: Path, height: int, width: int) -> Path:
    """Two classes of RGB PNGs (dark and bright) of one size."""
    rng = np.random.default_rng(height)
    for label, level in (("dark", 60), ("bright", 190)):
        (root / label).mkdir(parents=True)
        for i in range(6):
            pixels = np.clip(rng.normal(level, 40, (height, width, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """``(saved folder trained on 12x16 images, those images, the same classes at 24x32)``."""
    root = tmp_path_factory.mktemp("export-bundle")
    (root / "net.py").write_text(textwrap.dedent('''
        from torch import nn

        def build(num_classes=2, in_channels=3):
            return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                                 nn.Flatten(), nn.Linear(32, num_classes))
    '''))
    small, big = _images(root / "small", 12, 16), _images(root / "big", 24, 32)
    assert main(["train", "--model", f"{root / 'net.py'}:build", "--data", str(small), "--epochs", "1",
                 "--no-profile", "--no-progress", "--out", str(root / "train")]) == 0
    return root / "train", small, big


def test_bundle_takes_the_training_size(trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, _, big = trained
    bundle = tmp_path / "bundle"
    assert main(["export", "--model", str(model), "--data", str(big), "--bundle", str(bundle), "--no-onnx",
                 "--out", str(tmp_path / "out")]) == 0
    assert (f"prunekit export: warning: export: '{big}' holds 24x32 images but '{model}' was trained on 12x16: the "
            f"bundle takes 12x16 images, the data resized to it as --image-size 12x16 would. Pass --image-size to "
            f"choose another size.") in capsys.readouterr().err.splitlines()
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["input"]["shape"] == ["batch", 3, 12, 16] and manifest["preprocessing"]["resize"] == [12, 16]
    files = sorted(big.rglob("*.png"))[::3]
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    run = subprocess.run([sys.executable, "-I", str(bundle / "predict.py"), *map(str, files)], capture_output=True,
                         text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    steps = manifest["preprocessing"]
    x = _decode(Image, [(f, 0) for f in files], (12, 16), False)[0]
    x = (x - torch.tensor(steps["mean"]).view(1, -1, 1, 1)) / torch.tensor(steps["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        probabilities = torch.softmax(load(model)(x), 1).max(1).values.tolist()
    assert [float(line.split("\t")[2]) for line in run.stdout.splitlines()] == pytest.approx(probabilities, abs=1e-4)


def test_a_taken_bundle_folder_is_refused_before_any_work(trained, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    model, small, _ = trained
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    out = tmp_path / "out"
    assert main(["export", "--model", str(model), "--data", str(small), "--bundle", str(taken),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(f"bundle: '{taken}' already exists and is not an empty folder; nothing "
                                             f"is overwritten. Pass a new folder, or delete this one first.")
    assert not out.exists()  # NOTE: a refusal after the work left out/model and out/model.onnx behind
    assert [p.name for p in taken.iterdir()] == ["keep.txt"] and (taken / "keep.txt").read_text() == "mine"


def test_an_npz_of_8_bit_images_bundles(tmp_path: Path) -> None:
    from prunekit.data.custom import load_npz

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "grey.npz", x=images, y=np.arange(40) % 10)
    np.savez(tmp_path / "float.npz", x=images / 255.0, y=np.arange(40) % 10)
    assert load_npz(tmp_path / "grey.npz").pixel_scale == pytest.approx(1 / 255)
    assert load_npz(tmp_path / "float.npz").pixel_scale is None  # NOTE: floats are no 8-bit pixels
    bundle = tmp_path / "bundle"
    assert main(["export", "--model", "simple_cnn", "--data", str(tmp_path / "grey.npz"), "--bundle", str(bundle),
                 "--no-onnx", "--out", str(tmp_path / "out")]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["preprocessing"]["pixel_scale"] == pytest.approx(1 / 255)
    Image.fromarray(images[0]).save(tmp_path / "one.png")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    run = subprocess.run([sys.executable, "-I", str(bundle / "predict.py"), str(tmp_path / "one.png")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
