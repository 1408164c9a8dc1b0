"""Run folders the report tests read: a tiny prune of SimpleCNN on Fashion-MNIST (the shape of
`make demo`'s second run) and a tiny two-stage recipe, each written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from _report_runs import RECIPE, TINY

from prunekit.cli import main

@pytest.fixture(scope="session")
def prune_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`prunekit prune --layer-channels conv1=2` (make demo's second run) at tiny size."""
    out = tmp_path_factory.mktemp("report") / "prune-conv1"
    assert main(["prune", "--model", "simple_cnn", "--data", "fashion-mnist", *TINY, "--layer-channels",
                 "conv1=2", "--importance", "l1", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def recipe_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`prunekit run` of a train, prune, fine-tune recipe at tiny size."""
    folder = tmp_path_factory.mktemp("recipe")
    recipe = folder / "recipe.yaml"
    recipe.write_text(RECIPE.format(out=folder / "run"))
    assert main(["run", str(recipe), "--no-progress", "--max-eval-batches", "1"]) == 0
    return folder / "run"
