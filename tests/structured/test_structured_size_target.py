"""``Target(size_mb=...)``: "fits in 5 MB" as a budget: the saved weights file of the pruned model
takes at most that many megabytes, and close to it (the budget is spent, not wasted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from prunekit import models
from prunekit.cli import main
from prunekit.errors import ConfigError
from prunekit.measure import count_params
from prunekit.measure.size import size_on_disk
from prunekit.recover import parse_config
from prunekit.structured import StructuredPruner, Target, prune_iteratively


def _resnet20() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return models.create("resnet20").eval(), models.example_input("resnet20")


@pytest.mark.parametrize("budget", [0.8, 0.3])
def test_the_saved_weights_fit_the_budget_and_spend_it(budget: float) -> None:
    model, x = _resnet20()
    assert size_on_disk(model) > 1e6  # NOTE: 1.1 MB dense
    pruned = StructuredPruner({"size_mb": budget}, round_to=1).fit_transform(model, x)
    assert 0.95 * budget * 1e6 <= size_on_disk(pruned) <= budget * 1e6


def test_a_budget_the_model_fits_cuts_nothing_and_one_below_its_buffers_is_refused() -> None:
    model, x = _resnet20()
    pruner = StructuredPruner({"size_mb": 5}, round_to=1)
    assert count_params(pruner.fit_transform(model, x)) == count_params(model) and pruner.plan_.ratio == 0
    with pytest.raises(ConfigError, match=r"size_mb=0.001.*buffers and file header alone take 0.0\d+ MB.*pass a budget "
                                          r"above"):
        StructuredPruner({"size_mb": 0.001}).fit(model, x)
    with pytest.raises(ConfigError, match="'size_mb' must be a positive number of megabytes; got -2"):
        parse_config(Target, {"size_mb": -2})
    with pytest.raises(ConfigError, match="exactly one of ratio, macs, params, latency, size_mb"):
        parse_config(Target, {"size_mb": 2, "macs": 0.5})


def test_a_budget_met_in_steps_fits_too() -> None:
    model, x = _resnet20()
    pruned, records = prune_iteratively(model, x, {"size_mb": 0.5}, steps=2, round_to=1)
    assert len(records) == 2 and size_on_disk(pruned) <= 0.5e6


def test_prune_target_size_mb_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["prune", "--model", "simple_cnn", "--target-size-mb", "0.06", "--round-to", "1", "--baseline-epochs",
                 "0", "--finetune-epochs", "0", "--no-progress", "--no-onnx", "--batch-sizes", "1", "--min-time-s", "0",
                 "--max-eval-batches", "1", "--out", str(out)]) == 0
    assert "target: size at most 0.06 MB -> achieved:" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["target"] == {"size_mb": 0.06}
    assert results["before"]["size_bytes"] > 0.1e6 and 0.057e6 <= results["after"]["size_bytes"] <= 0.06e6
    assert (out / "model" / "model.safetensors").stat().st_size <= 0.06e6
