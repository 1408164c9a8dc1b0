"""Custom: the user's loss_fn and metric_fn; the task registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.errors import ConfigError, DataError, UnknownNameError
from prunekit.tasks import (
    TASKS,
    CausalLM,
    Classification,
    Custom,
    Embedding,
    Task,
    create,
    names,
    to_device,
)


def _mse(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return (model(x) - y).pow(2).mean()


def _data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(4, 3, generator=g), torch.randn(4, 2, generator=g)) for _ in range(3)]


def test_loss_and_mean_loss_without_metric_fn() -> None:
    model, data = nn.Linear(3, 2), _data()
    task = Custom(_mse)
    assert (task.metric, task.higher_is_better, task.name) == ("loss", False, "custom")
    torch.testing.assert_close(task.loss(model, data[0]), _mse(model, data[0]))
    with torch.no_grad():
        want = sum(float(_mse(model, b)) for b in data) / 3
    assert task.evaluate(model, data) == {"loss": pytest.approx(want), "count": 12}
    assert isinstance(task, Task)


def test_metric_fn_number_or_dict_sees_capped_batches() -> None:
    model, data = nn.Linear(3, 2), _data()
    seen: list[int] = []

    def count(model: nn.Module, batches) -> float:
        assert not model.training and not torch.is_grad_enabled()
        seen.append(len(list(batches)))
        return 7.0

    assert Custom(_mse, count, metric="items").evaluate(model, data, max_batches=2) == {"items": 7.0}
    assert seen == [2] and model.training
    both = Custom(_mse, lambda m, b: {"score": 1, "other": 2}, metric="score", higher_is_better=True)
    assert both.evaluate(model, data) == {"score": 1.0, "other": 2.0}
    with pytest.raises(DataError, match="'missing'"):
        Custom(_mse, lambda m, b: {"score": 1}, metric="missing").evaluate(model, data)


def test_bad_custom_tasks() -> None:
    with pytest.raises(ConfigError, match="need a metric_fn"):
        Custom(_mse, metric="accuracy")
    with pytest.raises(ConfigError, match="loss_fn"):
        Custom(None)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="scalar"):
        Custom(lambda m, b: m(b[0])).loss(nn.Linear(3, 2), _data()[0])


def test_registry() -> None:
    assert names() == ["causal_lm", "classification", "embedding"] and len(TASKS) == 3
    assert isinstance(create("causal-lm"), CausalLM) and isinstance(create("classification"), Classification)
    assert isinstance(create("embedding"), Embedding)
    with pytest.raises(UnknownNameError, match="Did you mean 'causal_lm'"):
        create("causal_ln")


def test_to_device_recurses() -> None:
    batch = {"a": (torch.ones(1), [torch.zeros(2)]), "b": "text"}
    moved = to_device(batch, "cpu")
    assert torch.equal(moved["a"][1][0], torch.zeros(2)) and moved["b"] == "text"
    assert isinstance(moved["a"], tuple) and isinstance(moved["a"][1], list)
