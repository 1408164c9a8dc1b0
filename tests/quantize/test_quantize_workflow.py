"""`prunekit quantize` and the recipe's quantize stage on a folder of PNG images: fp32 against int8,
and dense/pruned fp32/int8 side by side for a pruned folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from acceptance._acceptance_fixtures import write_image_folder

from prunekit.cli import main
from prunekit.errors import ConfigError
from prunekit.io import read_manifest
from prunekit.quantize import evaluate_onnx
from prunekit.workflows import Measure
from prunekit.workflows.quantize import quantize

_QUICK = ["--batch-sizes", "1", "--min-time-s", "0", "--no-progress"]


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(image folder, a pruned simple_cnn saved by prunekit prune)``."""
    root = tmp_path_factory.mktemp("quantize")
    images = write_image_folder(root / "images", per_class=4)
    out = root / "pruned"
    assert main(["prune", "--model", "simple_cnn", "--data", str(images), "--ratio", "0.5",
                 "--baseline-epochs", "1", "--finetune-epochs", "0", "--max-steps-per-epoch", "3",
                 "--no-onnx", "--batch-sizes", "1", "--min-time-s", "0", "--no-progress", "--out", str(out)]) == 0
    return images, out


def test_pruned_folder_gives_four_models_and_a_manifest(pruned: tuple[Path, Path], tmp_path: Path) -> None:
    images, model = pruned
    out = tmp_path / "q"
    assert main(["quantize", "--model", str(model), "--data", str(images), "--out", str(out), *_QUICK]) == 0
    results = json.loads((out / "results.json").read_text())
    names = [p["name"] for p in results["profiles"]]
    assert names == ["dense fp32", "pruned fp32", "dense int8", "pruned int8"]
    sizes = {p["name"]: p["size_bytes"] for p in results["profiles"]}
    assert sizes["pruned int8"] < sizes["pruned fp32"] < sizes["dense fp32"]
    assert sizes["pruned int8"] == (out / "model.onnx").stat().st_size
    assert all(len(p["latency"]) == 1 and p["latency"][0]["backend"] == "onnxruntime" for p in results["profiles"])
    # the int8 metric is ONNX Runtime's on the test split, recomputed here from the file itself
    int8 = results["profiles"][3]
    from prunekit import data

    test = data.load(str(images)).test
    assert int8["accuracy"] == pytest.approx(evaluate_onnx(out / "model.onnx", test)["accuracy"])
    record = read_manifest(out / "model").transforms[-1]
    assert record["kind"] == "quantize" and record["method"] == "minmax" and record["excluded"] == []
    assert [t["kind"] for t in read_manifest(out / "model").transforms][0] == "prune"
    # the report, as every command writes it: the pruned model's fp32 against its int8
    summary = (out / "report.md").read_text()
    assert (out / "report.html").is_file() and summary.startswith("# prunekit quantize:")
    assert "| | pruned fp32 | pruned int8 |" in summary
    assert f"| size (bytes) | {sizes['pruned fp32']} | {sizes['pruned int8']} |" in summary


def test_dense_model_fp32_against_int8_with_budget(pruned: tuple[Path, Path], tmp_path: Path) -> None:
    images, _ = pruned
    results = quantize("simple_cnn", str(images), method="entropy", max_metric_drop=0.0,
                       measure=Measure(batch_sizes=(1,), backends=("torch",), min_time_s=0), out_dir=tmp_path)
    assert [p["name"] for p in results["profiles"]] == ["model fp32", "model int8"]
    val = results["quantize"]["val"]
    assert val["fp32"] - val["int8"] <= 0.0 or results["quantize"]["excluded"]
    assert results["profiles"][1]["latency"] == []  # no onnxruntime backend asked for


def test_bad_input_is_one_line(pruned: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images, model = pruned
    with pytest.raises(ConfigError, match="unknown calibration method 'kl'"):
        quantize(str(model), str(images), method="kl")
    argv = ["quantize", "--model", str(model), "--data", str(images), "--calibration-batches", "0", *_QUICK]
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "calibration_batches must be >= 1" in err[0]


def test_recipe_quantize_stage(pruned: tuple[Path, Path], tmp_path: Path) -> None:
    images, _ = pruned
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: simple_cnn\ndata: {images}\nstages:\n  - train: {{epochs: 1, max_steps_per_epoch: 2}}\n"
                      f"  - quantize: {{method: percentile, calibration_batches: 2}}\n")
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    stage = next(s for s in results["stages"] if s["kind"] == "quantize")
    assert stage["summary"]["quantize"]["method"] == "percentile"
    assert set(stage["summary"]["test"]) == {"fp32", "int8"}
    assert Path(stage["summary"]["files"]["onnx"]).is_file()
