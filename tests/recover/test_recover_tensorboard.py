"""TrainConfig.tensorboard: each training writes a TensorBoard event file with its losses and metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
from _recover_fixtures import quadrant_splits, tiny_net

from prunekit.cli import main
from prunekit.recover import TrainConfig, train


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_each_training_writes_its_own_event_file(tmp_path: Path) -> None:
    log = tmp_path / "tb"
    config = TrainConfig(epochs=2, batch_size=16, seed=0, tensorboard=str(log))
    result = train(tiny_net(), quadrant_splits(), config)
    train(tiny_net(), quadrant_splits(), config.model_copy(update={"epochs": 1}))
    assert sorted(p.name for p in log.iterdir()) == ["run-1", "run-2"]
    assert all(any(f.name.startswith("events.out.tfevents") for f in (log / r).iterdir()) for r in ("run-1", "run-2"))
    scalars = _scalars(log / "run-1")
    assert [step for step, _ in scalars["epoch/val_accuracy"]] == [1, 2]
    assert [v for _, v in scalars["epoch/val_loss"]] == pytest.approx([row["val_loss"] for row in result.history])
    assert len(scalars["step/train_loss"]) > 2 and "epoch/lr" in scalars
    assert [step for step, _ in _scalars(log / "run-2")["epoch/train_loss"]] == [1]


def test_prune_takes_a_tensorboard_flag(tmp_path: Path) -> None:
    log = tmp_path / "tb"
    assert main(["prune", "--model", "simple_cnn", "--data", "fashion-mnist", "--baseline-epochs", "1",
                 "--finetune-epochs", "1", "--max-steps-per-epoch", "2", "--max-eval-batches", "1", "--no-progress",
                 "--no-onnx", "--batch-sizes", "1", "--ratio", "0.3", "--tensorboard", str(log),
                 "--out", str(tmp_path / "out")]) == 0
    # NOTE: the baseline and the fine-tuning are two trainings, so two runs.
    assert sorted(p.name for p in log.iterdir()) == ["run-1", "run-2"]
    assert all("epoch/val_accuracy" in _scalars(log / run) for run in ("run-1", "run-2"))
