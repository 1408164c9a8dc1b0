"""`prunekit export --bundle`: a folder that classifies image files with onnxruntime, numpy and
Pillow only, giving the same labels as the model in prunekit."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from acceptance._acceptance_fixtures import write_image_folder
from PIL import Image

from prunekit import data, load
from prunekit.cli import main
from prunekit.errors import ConfigError
from prunekit.quantize import OnnxModel, write_bundle
from prunekit.quantize.bundle import sha256


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """``(image folder, trained simple_cnn folder, new test images written as files)``."""
    root = tmp_path_factory.mktemp("bundle")
    images = write_image_folder(root / "images", per_class=4)
    assert main(["train", "--model", "simple_cnn", "--data", str(images), "--epochs", "2", "--lr", "0.003",
                 "--no-progress", "--out", str(root / "train"), "--no-onnx", "--batch-sizes", "1",
                 "--min-time-s", "0"]) == 0
    files = root / "photos"
    files.mkdir()
    rng = np.random.default_rng(0)
    for path in sorted(images.rglob("*.png"))[::5]:  # real garments, copied under new names
        Image.open(path).save(files / f"{path.parent.name}-{path.stem}.png")
    for i in range(3):  # noise, as a user's odd photo would be
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), mode="L").save(files / f"noise{i}.png")
    return images, root / "train", files


def _standardised(splits: data.DataSplits, files: list[Path]) -> torch.Tensor:
    """Each file decoded and standardised with the statistics the data records."""
    x = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("L"))).float()[None] / 255.0 for f in files])
    scale = 1.0 / torch.tensor(splits.std).reshape(1, -1, 1, 1)
    return torch.addcmul(-torch.tensor(splits.mean).reshape(1, -1, 1, 1) * scale, x, scale)


def _reference(model: torch.nn.Module, splits: data.DataSplits, files: list[Path]) -> list[int]:
    """The in-process prediction of the files."""
    with torch.no_grad():
        return model(_standardised(splits, files)).argmax(1).tolist()


def test_recorded_statistics_reproduce_the_data_pipeline(trained) -> None:
    images, _, _ = trained
    splits = data.load(str(images))
    assert splits.pixel_scale == pytest.approx(1 / 255) and len(splits.mean) == len(splits.std) == 1
    rows = torch.cat([splits.train.tensors[0], splits.val.tensors[0], splits.test.tensors[0]]).flatten(1)
    mine = _standardised(splits, sorted(images.rglob("*.png"))).flatten(1)
    assert torch.cdist(mine, rows, compute_mode="donot_use_mm_for_euclid_dist").min(1).values.max() < 1e-4  # every file is a row of the data, as decoded


def _predict(python: str, bundle: Path, files: list[Path], *flags: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run([python, *flags, str(bundle / "predict.py"), *map(str, files)], capture_output=True,
                          text=True, env=env, cwd=bundle.parent, timeout=120)


def _labels(output: str, splits: data.DataSplits) -> list[int]:
    rows = [line.split("\t") for line in output.strip().splitlines()]
    assert all(0.0 < float(p) <= 1.0 for _, _, p in rows)
    return [splits.class_names.index(label) for _, label, _ in rows]


@pytest.mark.parametrize("int8", [False, True], ids=["fp32", "int8"])
def test_bundle_runs_without_torch_or_prunekit(trained, tmp_path: Path, int8: bool) -> None:
    images, model, photos = trained
    bundle = tmp_path / "edge"
    argv = ["export", "--model", str(model), "--data", str(images), "--out", str(tmp_path / "out"),
            "--bundle", str(bundle), "--no-onnx"]
    assert main([*argv, *(["--int8"] if int8 else [])]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert sorted(p.name for p in bundle.iterdir()) == ["manifest.json", "model.onnx", "predict.py"]
    assert manifest["checksums"] == {n: sha256(bundle / n) for n in ("model.onnx", "predict.py")}
    splits = data.load(str(images))
    assert manifest["input"] == {"name": "input", "shape": ["batch", 1, 28, 28], "dtype": "float32", "layout": "NCHW"}
    assert manifest["preprocessing"]["mean"] == pytest.approx(list(splits.mean))
    assert manifest["labels"] == list(splits.class_names) and manifest["precision"] == ("int8" if int8 else "fp32")
    assert 0 <= manifest["measured"]["metrics"]["accuracy"] <= 1 and manifest["measured"]["latency_ms"]["batch 1"] > 0
    files = sorted(photos.iterdir())
    # NOTE: -I ignores PYTHONPATH and the user's site; -X importtime lists every module imported.
    run = _predict(sys.executable, bundle, files, "-I", "-X", "importtime")
    assert run.returncode == 0, run.stderr[-2000:]
    imported = set(re.findall(r"\|\s+([\w.]+)$", run.stderr, flags=re.M))
    assert "onnxruntime" in imported and "PIL.Image" in imported
    assert not {m for m in imported if m.split(".")[0] in ("torch", "prunekit", "torchvision")}
    reference = OnnxModel(bundle / "model.onnx") if int8 else load(model)
    assert _labels(run.stdout, splits) == _reference(reference, splits, files)


def test_predict_refuses_a_changed_file(trained, tmp_path: Path) -> None:
    images, model, photos = trained
    bundle = tmp_path / "edge"
    assert main(["export", "--model", str(model), "--data", str(images), "--out", str(tmp_path / "o"),
                 "--bundle", str(bundle), "--no-onnx"]) == 0
    with open(bundle / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    run = _predict(sys.executable, bundle, sorted(photos.iterdir())[:1], "-I")
    assert run.returncode != 0 and "'model.onnx' does not match its sha256" in run.stderr


def test_predict_reports_each_unreadable_file_and_classifies_the_rest(trained, tmp_path: Path) -> None:
    images, model, photos = trained
    bundle = tmp_path / "edge"
    assert main(["export", "--model", str(model), "--data", str(images), "--out", str(tmp_path / "o"),
                 "--bundle", str(bundle), "--no-onnx"]) == 0
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not a png")
    good = sorted(photos.iterdir())[:2]
    run = _predict(sys.executable, bundle, [corrupt, good[0], tmp_path / "missing.png", good[1]], "-I")
    assert run.returncode == 1
    errors = run.stderr.strip().splitlines()
    assert errors == [f"predict.py: cannot read '{corrupt}': not an image Pillow can read (damaged, empty or "
                      "another format); skip it or save it again as PNG or JPEG",
                      f"predict.py: cannot read '{tmp_path / 'missing.png'}': no such file; check the path"]
    assert "Traceback" not in run.stderr
    splits = data.load(str(images))
    assert [line.split("\t")[0] for line in run.stdout.strip().splitlines()] == [str(f) for f in good]
    assert _labels(run.stdout, splits) == _reference(load(model), splits, good)


def test_bundle_errors(trained, tmp_path: Path) -> None:
    images, model, _ = trained
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already exists and is not an empty folder"):
        write_bundle(tmp_path / "x.onnx", tmp_path / "taken", input_name="input", input_shape=(1, 28, 28),
                     mean=(0.0,), std=(1.0,), pixel_scale=1 / 255)
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
    assert main(["export", "--model", str(model), "--out", str(tmp_path / "o"), "--bundle", str(tmp_path / "b")]) == 2
    assert main(["export", "--model", str(model), "--data", str(images), "--out", str(tmp_path / "o"),
                 "--int8"]) == 2


def test_bundle_in_a_fresh_virtual_environment(trained, tmp_path: Path) -> None:
    """A new venv with only onnxruntime, numpy and Pillow (pip, ~20 s from this machine's package
    mirror) runs it; skipped, saying why, where pip cannot install them."""
    images, model, photos = trained
    bundle = tmp_path / "edge"
    assert main(["export", "--model", str(model), "--data", str(images), "--out", str(tmp_path / "o"),
                 "--bundle", str(bundle), "--int8", "--no-onnx"]) == 0
    venv = tmp_path / "venv"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "onnxruntime", "numpy", "Pillow"],
                               timeout=600, capture_output=True, text=True)
    if installed.returncode != 0:
        pytest.skip(f"pip could not install onnxruntime, numpy and Pillow here: {installed.stderr.strip()[-300:]}")
    print(f"fresh venv with onnxruntime, numpy, Pillow: {time.perf_counter() - start:.1f} s")
    frozen = subprocess.run([str(venv / "bin" / "pip"), "freeze"], capture_output=True, text=True, check=True).stdout
    assert "torch" not in frozen and "prunekit" not in frozen
    files = sorted(photos.iterdir())
    run = _predict(str(venv / "bin" / "python"), bundle, files)
    assert run.returncode == 0, run.stderr[-2000:]
    splits = data.load(str(images))
    assert _labels(run.stdout, splits) == _reference(OnnxModel(bundle / "model.onnx"), splits, files)
