"""What a recipe's saved folders record: the transforms the run applied (also after ``resume``) and
the profile measured for the model saved."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import prunekit
from prunekit.io import read_manifest
from prunekit.recipes import parse_recipe, run_recipe


def _recipe(npz: Path) -> dict:
    return {"model": "simple_cnn", "data": str(npz),
            "stages": [{"train": {"epochs": 1, "max_steps_per_epoch": 2}},
                       {"prune": {"target": {"ratio": 0.3}, "finetune_epochs": 0}},
                       {"export": {"onnx": False}}]}


def _kinds(folder: Path) -> list[str]:
    return [t["kind"] for t in read_manifest(folder).transforms]


@pytest.mark.parametrize("stopped", [False, True], ids=["whole", "resumed"])
def test_finished_model_lists_the_runs_transforms_and_its_profile(tiny_npz: Path, tmp_path: Path,
                                                                  stopped: bool) -> None:
    recipe, out = parse_recipe(_recipe(tiny_npz)), tmp_path / "out"
    if stopped:
        run_recipe(recipe, out_dir=out, stop_after=2)  # train, prune; the export runs after resume
    results = run_recipe(recipe, out_dir=out, resume=stopped)
    pruned = results["stages"][1]["profile"]  # the pruned model's profile: export changes nothing
    checkpoint = out / "checkpoints" / "stage-02-prune"
    for folder in (out / "model", out / "export", out / "checkpoints" / "stage-03-export"):
        manifest = read_manifest(folder)
        assert _kinds(folder) == ["prune"]
        assert manifest.transforms == read_manifest(checkpoint).transforms
        assert manifest.metrics["profile"]["params"] == pruned["params"] < results["initial"]["params"]
    finished = read_manifest(out / "model").metrics["profile"]
    assert finished == results["stages"][-1]["profile"] and 0.0 <= finished["accuracy"] <= 1.0
    assert read_manifest(out / "checkpoints" / "stage-01-train").metrics["profile"] == results["stages"][0]["profile"]
    loaded, x = prunekit.load(out / "model"), torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(loaded(x), results["model"].eval()(x), atol=1e-5)
