"""`prunekit train --resume`, as the README shows it: the same options continue (also a finished
run), different ones are refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prunekit.cli import main

_RUN = ["train", "--model", "simple_cnn", "--epochs", "1", "--max-steps-per-epoch", "3", "--optimizer", "sgd",
        "--lr", "0.05", "--no-progress", "--no-profile", "--max-eval-batches", "1"]


def test_resume_with_the_same_options_continues_and_other_options_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "run")
    assert main([*_RUN, "--out", out]) == 0
    first = json.loads((tmp_path / "run" / "results.json").read_text())
    assert main([*_RUN, "--out", out, "--resume"]) == 0
    again = json.loads((tmp_path / "run" / "results.json").read_text())
    assert again["train"]["history"] == first["train"]["history"] and again["train"]["epochs_run"] == 0
    capsys.readouterr()
    assert main([*_RUN[:-6], "--no-progress", "--out", out, "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "the config differs" in err and "lr (checkpoint 0.05, now 0.001)" in err and "\n" not in err
