"""Bad input to the training loop fails in one line before the model changes; distillation's teacher
is the model as it computes without prunekit's training-time hooks."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from _recover_fixtures import quadrant_splits, state_equal, tiny_net
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from prunekit.data import Loaders
from prunekit.errors import ConfigError, DataError
from prunekit.gates import ChannelGates
from prunekit.recover import Distiller, TrainConfig, train
from prunekit.structured import Target
from prunekit.tasks import soft_kl

ONE_EPOCH = TrainConfig(epochs=1, batch_size=16, lr=0.05)


def _images(n: int) -> TensorDataset:
    return quadrant_splits(n_train=n, n_val=1, n_test=1).train


class _Empty(IterableDataset):  # type: ignore[type-arg]
    """Yields nothing, and has no len(): only iterating finds that out."""

    def __iter__(self) -> Iterator[Any]:
        return iter(())


def test_distiller_teacher_is_the_model_without_gate_hooks() -> None:
    model, x = tiny_net(), torch.randn(8, 1, 8, 8)
    dense = copy.deepcopy(model).eval()
    gates = ChannelGates(Target(macs=0.5), init_log_alpha=0.0).fit(model, x)
    model.fc.register_forward_hook(lambda module, args, out: out + 1.0)  # the user's own: kept
    hooks = {id(m): list(m._forward_pre_hooks.items()) for m in model.modules()}
    teacher = Distiller(model).teacher
    with torch.no_grad():
        want = dense(x) + 1.0
        torch.testing.assert_close(teacher(x), want, rtol=0, atol=0)  # before the student ever ran
        model.train()(x)  # the student draws its gates
        torch.testing.assert_close(teacher(x), want, rtol=0, atol=0)
    assert {id(m): list(m._forward_pre_hooks.items()) for m in model.modules()} == hooks
    assert gates._handles  # the student keeps its gates


def test_distiller_rejects_a_teacher_with_other_classes() -> None:
    with pytest.raises(ConfigError, match=r"teacher's outputs have shape \(2, 5\) but the student's \(2, 10\)"):
        soft_kl(torch.randn(2, 10), torch.randn(2, 5), temperature=2.0)
    student = tiny_net()
    before = {k: v.clone() for k, v in student.named_parameters()}
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))  # 2 classes for the student's 4
    loader = DataLoader(_images(8), batch_size=2)  # 2 * 4 logits reshape into 4 rows of 2 without an error
    with pytest.raises(ConfigError, match=r"\(2, 2\) but the student's \(2, 4\)"):
        train(student, loader, ONE_EPOCH, callbacks=[Distiller(teacher)])
    assert state_equal(dict(student.named_parameters()), before)  # no step taken


@pytest.mark.parametrize("data", [DataLoader(_images(10), batch_size=16, drop_last=True), [],
                                  DataLoader(_Empty(), batch_size=4)],
                         ids=["drop_last", "empty-list", "no-len"])
def test_empty_training_data_is_a_data_error(data: Any) -> None:
    model = tiny_net()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(DataError, match="'data' yield(s|ed) no batches"):
        train(model, data, ONE_EPOCH)
    assert state_equal(model.state_dict(), before)


def test_resume_with_other_steps_per_epoch_is_refused(tmp_path: Path) -> None:
    class Stop:
        def on_epoch_end(self, epoch: int, model: nn.Module, metrics: Any) -> None:
            if epoch == 1:  # after epoch 0's checkpoint
                raise KeyboardInterrupt

    config = TrainConfig(epochs=3, lr=0.1, scheduler="step", step_size=1, gamma=0.5)
    data, model = _images(64), tiny_net()
    with pytest.raises(KeyboardInterrupt):
        train(model, DataLoader(data, batch_size=32), config, out_dir=tmp_path, callbacks=[Stop()])
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ConfigError, match="gives 4 steps per epoch, but the run in .* took 2"):
        train(model, DataLoader(data, batch_size=16), config, out_dir=tmp_path, resume=True)
    assert state_equal(model.state_dict(), before)


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_data_loader_leaves_the_global_rng_as_it_was(shuffle: bool) -> None:
    loader = DataLoader(_images(32), batch_size=16, shuffle=shuffle)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    train(tiny_net(), loader, ONE_EPOCH)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("label", ["val", "test"])
@pytest.mark.parametrize("empty", [DataLoader(_images(4), batch_size=8, drop_last=True),
                                   DataLoader(_Empty(), batch_size=4)], ids=["drop_last", "no-len"])
def test_empty_evaluation_data_fails_before_training(label: str, empty: Any) -> None:
    model = tiny_net()
    before = copy.deepcopy(model.state_dict())
    loader = DataLoader(_images(32), batch_size=16)
    data = Loaders(name="quadrants", train=loader, val=empty if label == "val" else None,
                   test=empty if label == "test" else None)
    with pytest.raises(DataError, match=f"'{label}' yields no batches"):
        train(model, data, TrainConfig(epochs=2, lr=0.05))
    assert state_equal(model.state_dict(), before)


def test_no_data_is_a_one_line_error() -> None:
    with pytest.raises(ConfigError, match="'data' must be DataSplits, Loaders or an iterable .* got NoneType"):
        train(tiny_net(), None, ONE_EPOCH)


def test_a_model_without_parameters_is_a_one_line_error() -> None:
    x, y = torch.randn(4, 10), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ConfigError, match="Flatten has no parameter to train"):
        train(nn.Flatten(), [(x, y)], ONE_EPOCH)
