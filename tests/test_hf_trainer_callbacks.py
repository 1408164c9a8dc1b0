"""PrunekitTrainerCallback in a Hugging Face Trainer's order of hooks, a ScheduledPruner's finalize
across norms over a cut width, and saving a BERT whose config no longer builds it."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

import prunekit
from prunekit.errors import ConfigError
from prunekit.sparsity import Sparsifier
from prunekit.structured import ScheduledPruner, StructuredPruner, Target

transformers = pytest.importorskip("transformers")
from prunekit.integrations import PrunekitTrainerCallback  # noqa: E402


def _mlp(norm: bool = False) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(6, 16), nn.ReLU()]
    if norm:  # NOTE: the norm spans the width the pruner cuts
        layers = [nn.Linear(6, 16), nn.LayerNorm(16), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(16, 3))


def _trainer_step(model: nn.Module, callback: Any, state: Any, control: Any, optimizer: torch.optim.Optimizer,
                  x: torch.Tensor, y: torch.Tensor) -> None:
    """One optimizer step in the order transformers' Trainer runs it (trainer.py, _run_epoch)."""
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    callback.on_optimizer_step(None, state, control)
    model.zero_grad()
    state.global_step += 1
    callback.on_step_end(None, state, control)


@pytest.mark.parametrize(("epochs", "want"), [([1.0, 2.0, 2.5], [0, 1, 2]), ([0.5], [0]), ([0.25], [0]),
                                              ([1.0, 1.75], [0, 1])])
def test_a_partial_last_epoch_keeps_its_number(epochs: list[float], want: list[int]) -> None:
    ended: list[int] = []
    callback = PrunekitTrainerCallback(SimpleNamespace(epoch_end=ended.append))
    state, control = transformers.TrainerState(), transformers.TrainerControl()
    for value in epochs:  # NOTE: state.epoch = epoch + (step + 1) / steps_in_epoch at each epoch end
        state.epoch = value
        callback.on_epoch_end(None, state, control)
    assert ended == want


def test_an_epoch_end_before_any_step_is_no_epoch() -> None:
    ended: list[int] = []
    callback = PrunekitTrainerCallback(SimpleNamespace(epoch_end=ended.append))
    state, control = transformers.TrainerState(), transformers.TrainerControl()
    for value in (None, 0.0):
        state.epoch = value
        callback.on_epoch_end(None, state, control)
    assert ended == []


def test_every_schedule_entry_takes_effect_when_max_steps_ends_mid_epoch() -> None:
    model, x = _mlp(), torch.randn(4, 6)
    schedule = [{"epoch": 0, "ratio": 0.25}, {"epoch": 1, "ratio": 0.4}, {"epoch": 2, "ratio": 0.5}]
    pruner = ScheduledPruner(schedule).fit(model, x)
    callback = PrunekitTrainerCallback(pruner)
    state, control = transformers.TrainerState(), transformers.TrainerControl()
    for value in (1.0, 2.0, 2.5):  # 3 epochs of 4 steps, max_steps=10
        state.epoch = value
        callback.on_epoch_end(None, state, control)
    assert [h["epoch"] for h in pruner.history_] == [0, 1, 2]
    assert pruner.finalize()[0].out_features == 8


@pytest.mark.parametrize("importance", ["taylor", "movement", "magnitude"])
def test_the_sparsifier_steps_before_the_trainer_clears_gradients(importance: str) -> None:
    model = _mlp()
    sparsifier = Sparsifier(0.5, importance=importance, schedule={"name": "gradual", "start": 0, "end": 2,
                                                                  "frequency": 1}).prepare(model, torch.randn(2, 6))
    callback = PrunekitTrainerCallback(sparsifier)
    state, control = transformers.TrainerState(), transformers.TrainerControl()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    for _ in range(3):
        _trainer_step(model, callback, state, control, optimizer, x, y)
    assert sparsifier.step_ == 2  # NOTE: the Trainer's step index, from 0
    assert [r.zeros / r.numel for r in sparsifier.sparsity_report()] == [0.5]


def test_a_pruner_without_a_step_argument_is_stepped_once_per_optimizer_step() -> None:
    calls: list[str] = []
    callback = PrunekitTrainerCallback(SimpleNamespace(step=lambda: calls.append("step")))
    state, control = transformers.TrainerState(), transformers.TrainerControl()
    callback.on_optimizer_step(None, state, control)
    callback.on_step_end(None, state, control)
    callback.on_step_end(None, state, control)  # NOTE: no on_optimizer_step before it (older transformers)
    assert calls == ["step", "step"]


def test_a_real_trainer_with_taylor_sparsity_and_a_partial_epoch(tmp_path: Path) -> None:
    pytest.importorskip("accelerate")
    from torch.utils.data import Dataset

    class Data(Dataset):
        def __len__(self) -> int:
            return 16

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            g = torch.Generator().manual_seed(i)
            return {"x": torch.randn(6, generator=g), "labels": torch.tensor(i % 3)}

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = _mlp()

        def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
            logits = self.net(x)
            return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}

    model = Model()
    sparsifier = Sparsifier(0.5, importance="taylor", schedule={"name": "gradual", "start": 0, "end": 4,
                                                                "frequency": 2}).prepare(model.net, torch.randn(2, 6))
    args = transformers.TrainingArguments(output_dir=str(tmp_path), max_steps=6, per_device_train_batch_size=4,
                                          report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True)
    ended: list[float] = []

    class Spy(transformers.TrainerCallback):
        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            ended.append(state.epoch)

    transformers.Trainer(model=model, args=args, train_dataset=Data(),
                         callbacks=[PrunekitTrainerCallback(sparsifier), Spy()]).train()
    assert ended == [1.0, 1.5] and sparsifier.step_ == 5
    assert [r.zeros / r.numel for r in sparsifier.sparsity_report()] == [0.5]


def test_finalize_reports_what_a_norm_over_a_cut_width_changes() -> None:
    x = torch.randn(4, 6)
    model = _mlp(norm=True)
    pruner = ScheduledPruner([{"epoch": 0, "ratio": 0.5, "importance": "l1"}]).fit(model, x)
    pruner.epoch_end(0)
    with pytest.warns(UserWarning, match="LayerNorm, RMSNorm, GroupNorm"):
        small = pruner.finalize()
    with torch.no_grad():
        measured = float((model.eval()(x) - small.eval()(x)).abs().max())
    assert pruner.output_difference_ == pytest.approx(measured) and measured > 1e-3


def test_finalize_of_an_exact_cut_measures_only_rounding(recwarn: pytest.WarningsRecorder) -> None:
    x = torch.randn(4, 6)
    pruner = ScheduledPruner([{"epoch": 0, "ratio": 0.5, "importance": "l1"}]).fit(_mlp(), x)
    pruner.epoch_end(0)
    pruner.finalize()
    assert pruner.output_difference_ is not None and pruner.output_difference_ < 1e-5
    assert not [w for w in recwarn if "ScheduledPruner" in str(w.message)]
    pruner.finalize(verify_result=False)
    assert pruner.output_difference_ is None


def test_a_bert_cut_to_a_width_its_head_count_does_not_divide_saves_and_loads(tmp_path: Path) -> None:
    config = transformers.BertConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                                     num_hidden_layers=1, num_labels=3, max_position_embeddings=16)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).eval()
    ids = torch.randint(0, 64, (1, 8))
    # NOTE: exact widths (round_to=1): the default rounding times layers, and may round the cut away
    small = StructuredPruner(Target(ratio=0.4), ignore=["classifier"], round_to=1).fit_transform(model, ids).eval()
    attention = small.bert.encoder.layer[0].attention.self
    hidden, heads = small.bert.embeddings.word_embeddings.weight.shape[1], attention.query.out_features // 8
    assert hidden % heads != 0, (hidden, heads)  # NOTE: 20 and 3 here: no config BERT builds holds it
    prunekit.save(small, tmp_path / "bert")
    loaded = prunekit.load(tmp_path / "bert").eval()
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, small(ids).logits, atol=1e-6)


def test_the_callback_refuses_a_gradient_pruner_where_transformers_clears_gradients_first(
        monkeypatch: pytest.MonkeyPatch) -> None:
    class OldCallback:  # NOTE: transformers < 4.42: no on_optimizer_step
        pass

    # NOTE: the module the callback imports now (some loads put a new one in sys.modules)
    monkeypatch.setattr(importlib.import_module("transformers"), "TrainerCallback", OldCallback)
    with pytest.raises(ConfigError, match="transformers>=4.42"):
        PrunekitTrainerCallback(SimpleNamespace(needs_gradients_=True, step=lambda i: None))
