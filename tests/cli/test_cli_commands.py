"""The commands run end to end, print their tables and write results.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prunekit.cli import build_parser, main


@pytest.mark.parametrize("command", ["train", "eval", "profile", "prune", "export", "run", "models", "datasets"])
def test_every_option_is_explained_in_help(command: str) -> None:
    sub = build_parser()._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{command} {action.option_strings} has no help text"


def test_train_then_eval_then_profile(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", "--model", "simple_cnn", "--epochs", "1", "--max-steps-per-epoch", "30",
                 "--out", str(out), "--no-progress", "--no-onnx", "--batch-sizes", "1"]) == 0
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and "MACs" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["command"] == "train" and results["model"] == "simple_cnn"
    assert results["profile"]["params"] == 26138 and results["profile"]["macs"] == 110400
    weights = out / "model.safetensors"
    assert weights.is_file()

    assert main(["eval", "--model", "simple_cnn", "--weights", str(weights), "--out", str(out), "--overwrite"]) == 0
    printed = capsys.readouterr().out
    evaluated = json.loads((out / "results.json").read_text())["metrics"]["accuracy"]
    # 30 Adam steps already lift the SimpleCNN well above chance (10 %) on Fashion-MNIST.
    assert evaluated > 0.4
    assert f"{100 * evaluated:.2f} %" in printed
    assert evaluated == pytest.approx(results["train"]["test"]["accuracy"])


def test_profile_without_data(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "--model", "resnet20", "--no-onnx", "--batch-sizes", "1"]) == 0
    printed = capsys.readouterr().out
    assert "params" in printed and "MACs" in printed and "latency" in printed


def test_profile_fused_adds_the_folded_row(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "--model", "resnet20", "--fused", "--no-onnx", "--batch-sizes", "1"]) == 0
    printed = capsys.readouterr().out
    assert "torch batch 1" in printed and "torch-fused batch 1" in printed
    assert "onnxruntime" not in printed


def test_models_lists_prunekit_and_torchvision(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "resnet*"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert {"resnet20", "resnet56", "resnet18", "resnet50"} <= set(names)
