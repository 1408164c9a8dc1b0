"""Pruning within a metric budget ("less than 1 point lost"): the deepest cut towards the target
whose fine-tuned validation metric holds, found by bisection; the dense model where none holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from torch import nn

import prunekit

from prunekit.cli import main
from prunekit.errors import ConfigError
from prunekit.measure import count_params
from prunekit.recover import TrainConfig
from prunekit.structured import Target
from prunekit.workflows.metric_budget import Attempt, prune_within, scaled_target
from prunekit.workflows.prune import prune
from prunekit.workflows.common import Measure


@pytest.mark.parametrize(("target", "cut", "expected"), [
    ({"ratio": 0.6}, 0.5, {"ratio": 0.3}), ({"macs": 0.25}, 0.5, {"macs": 0.625}),
    ({"params": 0.2}, 1.0, {"params": 0.2}), ({"latency": 0.5, "batch_size": 8}, 0.5, {"latency": 0.75, "batch_size": 8}),
])
def test_a_cut_is_a_point_between_nothing_cut_and_the_target(target: dict[str, Any], cut: float,
                                                            expected: dict[str, Any]) -> None:
    assert scaled_target(Target(**target), cut) == expected


def _tries(max_drop: float, tries: int) -> tuple[Attempt | None, dict[str, Any], list[float]]:
    """A stand-in model whose metric falls linearly with the cut: 0.9 dense, 0.8 at the target."""
    asked: list[float] = []

    def attempt(target: dict[str, Any]) -> Attempt:
        model = nn.Linear(1, 1)
        model.kept = target["macs"]  # type: ignore[assignment]
        asked.append(target["macs"])
        return Attempt(None, model, None, {"macs": target["macs"]}, [], None)

    def score(model: nn.Module) -> float:
        kept = getattr(model, "kept", 1.0)
        return 0.9 - 0.1 * (1.0 - kept) / 0.5

    found, record = prune_within(nn.Linear(1, 1), Target(macs=0.5), max_metric_drop=max_drop, tries=tries,
                                 attempt=attempt, score=score, higher_is_better=True)
    return found, record, asked


def test_the_deepest_cut_within_the_budget_is_kept() -> None:
    found, record, asked = _tries(0.03, 5)
    # NOTE: the drop is 0.2 x the MACs removed: within 0.03 down to 85 % of the MACs kept
    assert asked == [0.5, 0.75, 0.875, 0.8125, 0.84375]  # the target, then a bisection
    assert [t["within"] for t in record["tries"]] == [False, False, True, False, False]
    assert found is not None and found.model.kept == 0.875 and record["chosen"] == 2
    assert record["dense"] == pytest.approx(0.9) and record["tries"][2]["drop"] == pytest.approx(0.025)


def test_a_target_within_the_budget_is_the_one_try() -> None:
    found, record, asked = _tries(0.5, 5)
    assert asked == [0.5] and found is not None and record["chosen"] == 0


def test_no_cut_within_the_budget_gives_none_and_bad_budgets_are_refused() -> None:
    found, record, _ = _tries(0.0, 3)
    assert found is None and "chosen" not in record and len(record["tries"]) == 3
    with pytest.raises(ConfigError, match="max_metric_drop must be >= 0.*0.01 is one accuracy point"):
        _tries(-0.01, 3)
    with pytest.raises(ConfigError, match="tries must be >= 1"):
        _tries(0.01, 0)


_QUICK = {"baseline_epochs": 0, "finetune_epochs": 0,
          "measure": Measure(batch_sizes=(1,), backends=("torch",), min_time_s=0, max_eval_batches=1)}


def test_prune_keeps_the_dense_model_when_no_cut_holds(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="no cut of the 1 tried kept the validation accuracy within 0 of the dense"):
        results = prune("simple_cnn", stage={"target": {"macs": 0.1}, "round_to": 1}, max_metric_drop=0.0,
                        tries=1, out_dir=tmp_path / "run", **{**_QUICK, "baseline_epochs": 1},
                        train_config=TrainConfig(max_steps_per_epoch=40))
    budget = results["metric_budget"]
    assert len(budget["tries"]) == 1 and budget["tries"][0]["drop"] > 0 and "chosen" not in budget
    assert results["after"]["params"] == results["before"]["params"]


def test_prune_max_metric_drop_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["prune", "--model", "simple_cnn", "--max-metric-drop", "1", "--round-to", "1", "--baseline-epochs", "0",
                 "--finetune-epochs", "0", "--no-progress", "--no-onnx", "--batch-sizes", "1", "--min-time-s", "0",
                 "--max-eval-batches", "1", "--out", str(out)]) == 0
    assert "metric budget: at most 1 lost on validation" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["target"] == {"macs": 0.1} and results["metric_budget"]["chosen"] == 0
    assert results["achieved"]["macs"] <= 0.1 and results["after"]["params"] < results["before"]["params"]
    assert count_params(prunekit.load(out / "model")) == results["after"]["params"]
