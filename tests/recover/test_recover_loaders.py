"""train on plain DataLoaders and other tasks: dict batches, bit-identical resume, distillation
through the task, the checkpoint's plain-data rule."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from _recover_fixtures import DictImages, quadrant_splits, state_equal, tiny_net
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from prunekit.errors import ConfigError
from prunekit.recover import Distiller, TrainConfig, train
from prunekit.tasks import CausalLM, Custom, Embedding
from prunekit.recover import checkpoint

CONFIG = TrainConfig(epochs=2, batch_size=32, lr=0.02)


def _loaders(generator: torch.Generator | None, *, dicts: bool = True) -> tuple[DataLoader, DataLoader]:
    splits = quadrant_splits()
    wrap = DictImages if dicts else (lambda d: d)
    return (DataLoader(wrap(splits.train), batch_size=32, shuffle=True, generator=generator),
            DataLoader(wrap(splits.val), batch_size=64))


def test_trains_on_a_dataloader_of_dicts() -> None:
    model = tiny_net()
    train_loader, val_loader = _loaders(torch.Generator().manual_seed(0))
    result = train(model, train_loader, TrainConfig(epochs=6, lr=0.02), val=val_loader)
    assert result.val is not None and result.val["accuracy"] > 0.9 and result.test is None
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_top5"} <= set(result.history[0])
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


class _Interrupt:
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, step: int, model: nn.Module, loss: float) -> None:
        if step == self.step:
            raise KeyboardInterrupt


@pytest.mark.parametrize("seeded", [True, False], ids=["own-generator", "global-rng"])
def test_resume_on_a_dataloader_is_bit_identical(tmp_path: Path, seeded: bool) -> None:
    config = TrainConfig(epochs=3, lr=0.01, scheduler="cosine", warmup_epochs=1)

    def loaders() -> tuple[DataLoader, DataLoader]:
        return _loaders(torch.Generator().manual_seed(7) if seeded else None, dicts=False)

    straight = tiny_net()
    expected = train(straight, loaders()[0], config, val=loaders()[1])
    with pytest.raises(KeyboardInterrupt):
        train(tiny_net(), loaders()[0], config, val=loaders()[1], out_dir=tmp_path,
              callbacks=[_Interrupt(step=19)])  # 8 steps per epoch: stops inside epoch 3
    resumed = tiny_net()
    result = train(resumed, loaders()[0], config, val=loaders()[1], out_dir=tmp_path, resume=True)
    assert result.epochs_run == 1 and result.history == expected.history
    assert state_equal(straight, resumed)
    other = tiny_net()
    train(other, loaders()[0], TrainConfig(**{**config.model_dump(), "seed": 1}), val=loaders()[1])
    assert not state_equal(straight, other)


def test_generator_state_is_what_makes_resume_exact(tmp_path: Path) -> None:
    """Without restoring the generator, epoch 2 would see epoch 1's order again."""
    config = TrainConfig(epochs=2, lr=0.01)
    generator = torch.Generator().manual_seed(3)
    loader = _loaders(generator, dicts=False)[0]
    train(tiny_net(), loader, config, out_dir=tmp_path)
    saved = checkpoint.load(tmp_path / checkpoint.FILE, torch.device("cpu"))["generators"]
    assert len(saved) == 1 and torch.equal(saved[0], generator.get_state())
    assert not torch.equal(saved[0], torch.Generator().manual_seed(3).get_state())


def test_one_pass_iterators_and_unsized_data_are_clear() -> None:
    data = quadrant_splits().train
    batches = [(data.tensors[0][i:i + 32], data.tensors[1][i:i + 32]) for i in range(0, 256, 32)]
    with pytest.raises(ConfigError, match="one-pass iterator"):
        train(tiny_net(), iter(batches), CONFIG)
    assert train(tiny_net(), iter(batches), TrainConfig(epochs=1)).history[0]["train_loss"] > 0

    class Stream:
        def __iter__(self):
            return iter(batches)

    with pytest.raises(ConfigError, match="max_steps_per_epoch"):
        train(tiny_net(), Stream(), TrainConfig(epochs=1, scheduler="cosine"))
    result = train(tiny_net(), Stream(), TrainConfig(epochs=1, scheduler="cosine", max_steps_per_epoch=3))
    assert result.epochs_run == 1


class _Opaque:
    def state_dict(self) -> dict[str, Any]:
        return {"thing": object()}


def test_checkpoint_refuses_what_weights_only_cannot_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"checkpoint\['callbacks'\]\[0\]\['thing'\] is a object"):
        train(tiny_net(), quadrant_splits(), TrainConfig(epochs=1, max_steps_per_epoch=1),
              out_dir=tmp_path, callbacks=[_Opaque()])


class TinyLM(nn.Module):
    """Embedding -> Linear language model, a loss of its own when given labels (HF-like)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.embed = nn.Embedding(16, 8)
        self.head = nn.Linear(8, 16)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.embed(input_ids))


def _token_loader() -> DataLoader:
    # NOTE: a repeating sequence: next-token prediction is learnable.
    ids = torch.arange(64).remainder(16).reshape(8, 8)
    masks = torch.ones_like(ids)
    rows = [{"input_ids": i, "attention_mask": m} for i, m in zip(ids, masks)]
    return DataLoader(rows, batch_size=4)


def test_causal_lm_training_and_distillation_through_the_task() -> None:
    student, teacher = TinyLM(1), TinyLM(0)
    frozen = {k: v.clone() for k, v in teacher.state_dict().items()}
    result = train(student, _token_loader(), TrainConfig(epochs=5, lr=0.05), task="causal_lm",
                   val=_token_loader(), callbacks=[Distiller(teacher, alpha=0.5)])
    history = result.history
    assert "val_perplexity" in history[0] and "train_accuracy" not in history[0]
    assert history[-1]["val_perplexity"] < history[0]["val_perplexity"]
    assert result.val is not None and result.val["perplexity"] == pytest.approx(math.exp(result.val["loss"]))
    assert state_equal(teacher.state_dict(), frozen)
    batch = next(iter(_token_loader()))
    only_kd = Distiller(teacher, alpha=1.0, temperature=2.0, task=CausalLM())
    logits = student(batch["input_ids"])
    want = CausalLM().distill_loss(logits, teacher(batch["input_ids"]), batch, temperature=2.0)
    torch.testing.assert_close(only_kd.on_loss(0, student, batch, logits, torch.tensor(0.0)), want)


def test_embedding_distillation_is_cosine_and_training_raises_it() -> None:
    teacher, student = TinyLM(0), TinyLM(1)
    task = Embedding(teacher=teacher)
    before = task.evaluate(student, _token_loader())["cosine"]
    distiller = Distiller(teacher, alpha=1.0)
    result = train(student, _token_loader(), TrainConfig(epochs=4, lr=0.05), task=task,
                   val=_token_loader(), callbacks=[distiller])
    assert distiller.task is task and result.val is not None and result.val["cosine"] > before
    batch = next(iter(_token_loader()))
    same = distiller.on_loss(0, teacher, batch, task.outputs(teacher, batch), torch.tensor(0.0))
    assert float(same.detach()) == pytest.approx(0.0, abs=1e-6)


def test_custom_task_trains() -> None:
    def mse(model: nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        return (model(x).squeeze(1) - y).pow(2).mean()

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5])
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    model = nn.Linear(3, 1)
    result = train(model, loader, TrainConfig(epochs=20, lr=0.05), task=Custom(mse), val=loader)
    assert result.history[-1]["val_loss"] < 0.1 * result.history[0]["val_loss"]


def test_max_eval_batches_caps_validation_and_test() -> None:
    config = TrainConfig(epochs=1, batch_size=32, max_steps_per_epoch=1, max_eval_batches=1)
    result = train(tiny_net(), quadrant_splits(n_val=600, n_test=600), config)
    assert result.val is not None and result.val.count == 512
    assert result.test is not None and result.test.count == 512


def test_hugging_face_causal_lm_trains_with_its_own_loss(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=16, n_positions=8, n_embd=16, n_layer=1, n_head=2,
                                     bos_token_id=0, eos_token_id=0)

    def build() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return transformers.GPT2LMHeadModel(config)

    straight, settings = build(), TrainConfig(epochs=3, lr=0.01)
    result = train(straight, _token_loader(), settings, task="causal_lm", val=_token_loader())
    assert result.history[-1]["val_perplexity"] < result.history[0]["val_perplexity"]
    with pytest.raises(KeyboardInterrupt):
        train(build(), _token_loader(), settings, task="causal_lm", val=_token_loader(),
              out_dir=tmp_path, callbacks=[_Interrupt(step=3)])
    resumed = build()
    again = train(resumed, _token_loader(), settings, task="causal_lm", val=_token_loader(),
                  out_dir=tmp_path, resume=True)
    assert again.history == result.history and state_equal(straight, resumed)
    with pytest.raises(ConfigError, match="task \\(checkpoint 'causal_lm', now 'classification'\\)"):
        train(build(), _token_loader(), settings, out_dir=tmp_path, resume=True)


def test_label_smoothing_goes_to_classification_only() -> None:
    config = TrainConfig(epochs=1, max_steps_per_epoch=1, label_smoothing=0.1)
    assert train(tiny_net(), quadrant_splits(), config, task="classification").epochs_run == 1
    with pytest.raises(ConfigError, match="label_smoothing=0.1 applies only to classification"):
        train(TinyLM(), _token_loader(), config, task="causal_lm")


def test_per_pixel_training_accuracy_is_a_fraction_of_the_pixels() -> None:
    torch.manual_seed(0)
    x = torch.randn(32, 2, 6, 6)
    labels = (x[:, 0] > 0).long()  # a pixel's class is its first channel's sign
    labels[:, :2] = -100  # void rows: no loss, no count
    loader = DataLoader(TensorDataset(x, labels), batch_size=8)
    history = train(nn.Conv2d(2, 2, 1), loader, TrainConfig(epochs=3, lr=0.5)).history
    assert all(0.0 <= row["train_accuracy"] <= 1.0 for row in history)
    assert history[-1]["train_accuracy"] > 0.9


def test_a_submodule_the_user_froze_stays_in_eval_mode() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 2))
    model[1].eval()  # a frozen BatchNorm: its statistics are the pretrained ones
    stats = model[1].running_mean.clone()
    loader = DataLoader(TensorDataset(torch.randn(32, 3, 8, 8), torch.randint(0, 2, (32,))), batch_size=8)
    train(model, loader, TrainConfig(epochs=1, lr=0.01))
    assert not model[1].training and torch.equal(model[1].running_mean, stats)
    whole = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2)).eval()  # wholly in eval mode: trains wholly
    before = whole[1].running_mean.clone()
    train(whole, loader, TrainConfig(epochs=1, lr=0.01))
    assert not torch.equal(whole[1].running_mean, before)
