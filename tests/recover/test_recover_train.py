"""The training loop: learning, determinism, bit-identical resume, checkpoints, callbacks."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from _recover_fixtures import quadrant_splits, state_equal, tiny_net

from prunekit.errors import ConfigError, DataNotFoundError
from prunekit.io import load_weights
from prunekit.recover import TrainConfig, TrainResult, train
from prunekit.recover.train import learning_rate
from prunekit.recover import checkpoint

QUICK = dict(epochs=2, batch_size=32, lr=0.01)


def test_learns_a_separable_problem() -> None:
    model, data = tiny_net(), quadrant_splits()
    result = train(model, data, TrainConfig(epochs=6, batch_size=32, lr=0.02), progress=False)
    assert isinstance(result, TrainResult) and result.epochs_run == 6 and len(result.history) == 6
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.val["accuracy"] > 0.9
    assert result.test is not None and result.test["accuracy"] > 0.9 and result.test["count"] == 64


def test_same_seed_same_weights_and_global_rng_untouched() -> None:
    data = quadrant_splits()
    before = torch.get_rng_state()
    first, second = tiny_net(), tiny_net()
    history_a = train(first, data, TrainConfig(**QUICK), progress=False).history
    history_b = train(second, data, TrainConfig(**QUICK), progress=False).history
    assert state_equal(first, second) and history_a == history_b
    assert torch.equal(torch.get_rng_state(), before)
    third = tiny_net()
    train(third, data, TrainConfig(**QUICK, seed=1), progress=False)
    assert not state_equal(first, third)


class _Interrupt:
    """Raises KeyboardInterrupt at one step or at one epoch end, like Ctrl-C."""

    def __init__(self, *, step: int | None = None, epoch: int | None = None) -> None:
        self.step, self.epoch = step, epoch

    def on_step_end(self, step: int, model: torch.nn.Module, loss: float) -> None:
        if step == self.step:
            raise KeyboardInterrupt

    def on_epoch_end(self, epoch: int, model: torch.nn.Module, metrics: Any) -> None:
        if epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.parametrize("interrupt", [_Interrupt(step=19), _Interrupt(epoch=1)],
                         ids=["mid-epoch-3", "end-of-epoch-2"])
def test_resume_is_bit_identical(tmp_path: Path, interrupt: _Interrupt) -> None:
    data = quadrant_splits()
    config = TrainConfig(epochs=3, batch_size=32, lr=0.01, scheduler="cosine", warmup_epochs=1)
    straight = tiny_net()
    expected = train(straight, data, config, progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_net(), data, config, out_dir=tmp_path, progress=False, callbacks=[interrupt])
    saved = checkpoint.load(tmp_path / checkpoint.FILE, torch.device("cpu"))
    resumed = tiny_net()
    result = train(resumed, data, config, out_dir=tmp_path, resume=True, progress=False)
    assert result.epochs_run == 3 - (saved["epoch"] + 1)
    assert state_equal(straight, resumed)
    assert result.history == expected.history


def test_checkpoint_holds_the_whole_state_without_pickle(tmp_path: Path) -> None:
    model = tiny_net()
    train(model, quadrant_splits(), TrainConfig(**QUICK, optimizer="sgd", scheduler="step"),
        out_dir=tmp_path, progress=False)
    state = checkpoint.load(tmp_path / checkpoint.FILE, torch.device("cpu"))
    assert state["epoch"] == 1 and len(state["history"]) == 2
    assert state["config"] == TrainConfig(**QUICK, optimizer="sgd", scheduler="step").model_dump()
    assert state["scheduler"]["step"] == 16
    assert state_equal(model.state_dict(), state["model"])
    assert state["optimizer"]["state"], "optimizer state (momentum buffers) must be saved"
    assert all(isinstance(k, int) for k in state["optimizer"]["state"]), "int keys stay ints"
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".pt", ".pth", ".pkl")) == []
    raw = (tmp_path / checkpoint.FILE).read_bytes()  # NOTE: a safetensors file: JSON header, raw tensors
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    assert "prunekit.checkpoint" in header["__metadata__"] and b"pickle" not in raw


def test_out_dir_files(tmp_path: Path) -> None:
    model = tiny_net()
    result = train(model, quadrant_splits(), TrainConfig(**QUICK), out_dir=tmp_path / "run",
                 progress=False)
    record = json.loads((tmp_path / "run" / "train.json").read_text())
    assert record["history"] == list(result.history)
    assert record["test"]["accuracy"] == result.test["accuracy"]
    assert record["config"]["epochs"] == 2 and record["wall_time_s"] > 0
    reloaded = load_weights(tiny_net(seed=5), tmp_path / "run" / "model.safetensors")
    assert state_equal(model, reloaded)
    assert not list((tmp_path / "run").glob(".*.tmp")), "no temporary files left behind"


def test_resume_with_other_config_names_fields(tmp_path: Path) -> None:
    data = quadrant_splits()
    train(tiny_net(), data, TrainConfig(**QUICK), out_dir=tmp_path, progress=False)
    other = TrainConfig(**{**QUICK, "lr": 0.5, "batch_size": 16})
    with pytest.raises(ConfigError, match=r"batch_size \(checkpoint 32, now 16\), lr"):
        train(tiny_net(), data, other, out_dir=tmp_path, resume=True, progress=False)


def test_resume_without_checkpoint_is_clear(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="checkpoint.safetensors' does not exist"):
        train(tiny_net(), quadrant_splits(), TrainConfig(**QUICK), out_dir=tmp_path, resume=True)
    with pytest.raises(ConfigError, match="resume=True needs out_dir"):
        train(tiny_net(), quadrant_splits(), TrainConfig(**QUICK), resume=True)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
@pytest.mark.parametrize("scheduler", ["none", "cosine", "step"])
def test_optimizers_and_schedulers_run(optimizer: str, scheduler: str) -> None:
    model, initial = tiny_net(), tiny_net()
    config = TrainConfig(epochs=2, batch_size=64, lr=0.01, optimizer=optimizer, scheduler=scheduler,
                         step_size=1, weight_decay=1e-4, nesterov=optimizer == "sgd",
                         grad_clip=1.0, label_smoothing=0.1, max_steps_per_epoch=2)
    result = train(model, quadrant_splits(), config, progress=False)
    assert all(math.isfinite(row["train_loss"]) for row in result.history)
    assert not state_equal(model, initial)


def test_learning_rate_schedule() -> None:
    cosine = TrainConfig(epochs=4, lr=1.0, scheduler="cosine", warmup_epochs=1)
    assert [learning_rate(cosine, s, 2) for s in (0, 1)] == [0.5, 1.0]
    assert learning_rate(cosine, 2, 2) == 1.0 and learning_rate(cosine, 5, 2) == pytest.approx(0.5)
    assert 0 < learning_rate(cosine, 7, 2) < 0.1
    step = TrainConfig(epochs=6, lr=1.0, scheduler="step", step_size=2, gamma=0.5)
    assert [learning_rate(step, s, 3) for s in (0, 5, 6, 12)] == [1.0, 1.0, 0.5, 0.25]
    assert learning_rate(TrainConfig(lr=0.1), 1000, 3) == 0.1


class _Recorder:
    def __init__(self) -> None:
        self.epochs: list[int] = []
        self.steps: list[int] = []
        self.models: set[int] = set()

    def on_epoch_end(self, epoch: int, model: torch.nn.Module, metrics: Any) -> None:
        assert metrics["epoch"] == epoch and "val_accuracy" in metrics
        self.epochs.append(epoch)
        self.models.add(id(model))

    def on_step_end(self, step: int, model: torch.nn.Module, loss: float) -> None:
        assert isinstance(loss, float)
        self.steps.append(step)
        self.models.add(id(model))


class _EpochOnly:
    def __init__(self) -> None:
        self.calls = 0

    def on_epoch_end(self, epoch: int, model: torch.nn.Module, metrics: Any) -> None:
        self.calls += 1


def test_callbacks_called_with_right_epochs_and_steps() -> None:
    model, recorder, epoch_only = tiny_net(), _Recorder(), _EpochOnly()
    config = TrainConfig(epochs=3, batch_size=32, max_steps_per_epoch=3)
    train(model, quadrant_splits(), config, progress=False, callbacks=[recorder, epoch_only])
    assert recorder.epochs == [0, 1, 2] and recorder.steps == list(range(9))
    assert recorder.models == {id(model)} and epoch_only.calls == 3


class _Counter:
    """A stateful callback: its state must survive an interruption."""

    def __init__(self) -> None:
        self.count = 0

    def on_step_end(self, step: int, model: torch.nn.Module, loss: float) -> None:
        self.count += 1

    def state_dict(self) -> dict[str, int]:
        return {"count": self.count}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.count = state["count"]


def test_callback_state_is_checkpointed(tmp_path: Path) -> None:
    data, config = quadrant_splits(), TrainConfig(epochs=3, batch_size=32, max_steps_per_epoch=2)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_net(), data, config, out_dir=tmp_path, progress=False,
            callbacks=[_Counter(), _Interrupt(step=5)])
    counter = _Counter()
    train(tiny_net(), data, config, out_dir=tmp_path, resume=True, progress=False,
        callbacks=[counter])
    assert counter.count == 6


def test_zero_epochs_only_evaluates(tmp_path: Path) -> None:
    model, initial = tiny_net(), tiny_net()
    result = train(model, quadrant_splits(), TrainConfig(epochs=0), out_dir=tmp_path, progress=False)
    assert result.history == () and result.epochs_run == 0 and result.val["count"] == 64
    assert state_equal(model, initial) and (tmp_path / "model.safetensors").is_file()


def test_progress_bar_only_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    config = TrainConfig(epochs=1, batch_size=64)
    train(tiny_net(), quadrant_splits(), config, progress=False)
    assert capsys.readouterr().err == ""
    train(tiny_net(), quadrant_splits(), config, progress=True)
    captured = capsys.readouterr()
    assert "epoch 1/1" in captured.err and captured.out == ""


def test_accepts_a_mapping_config() -> None:
    result = train(tiny_net(), quadrant_splits(), {"epochs": 1, "max_steps_per_epoch": 1},
                 progress=False)
    assert result.epochs_run == 1
    with pytest.raises(ConfigError, match="'epochs' must be >= 0; got -1"):
        train(tiny_net(), quadrant_splits(), {"epochs": -1})
