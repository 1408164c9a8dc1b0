"""measure.evaluate: the old TensorDataset call (Metrics), any iterable, a task, max_batches."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from prunekit.errors import ConfigError
from prunekit.measure import Metrics, evaluate


def _data() -> tuple[nn.Module, TensorDataset]:
    g = torch.Generator().manual_seed(0)
    model = nn.Linear(5, 4)
    with torch.no_grad():
        model.weight.copy_(torch.randn(4, 5, generator=g))
    return model, TensorDataset(torch.randn(50, 5, generator=g), torch.randint(0, 4, (50,), generator=g))


def test_tensor_dataset_gives_metrics_as_before() -> None:
    model, dataset = _data()
    x, y = dataset.tensors
    with torch.no_grad():
        logits = model(x)
    metrics = evaluate(model, dataset, batch_size=16)
    assert isinstance(metrics, Metrics) and metrics.count == 50
    assert metrics.loss == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-5)
    assert metrics.accuracy == pytest.approx(float((logits.argmax(1) == y).float().mean()))
    again = evaluate(model, DataLoader(dataset, batch_size=7))
    assert isinstance(again, Metrics) and (again.accuracy, again.count) == (metrics.accuracy, 50)
    assert again.loss == pytest.approx(metrics.loss, rel=1e-6)


def test_a_task_gives_its_dict_and_max_batches_caps() -> None:
    model, dataset = _data()
    full = evaluate(model, dataset, task="classification", batch_size=10)
    assert set(full) == {"loss", "accuracy", "top5", "count"} and full["top5"] == 1.0
    assert evaluate(model, dataset, task="classification", batch_size=10, max_batches=2)["count"] == 20
    assert evaluate(model, dataset, batch_size=10, max_batches=3).count == 30


def test_bad_arguments_are_clear() -> None:
    model, dataset = _data()
    with pytest.raises(ConfigError, match="batch_size"):
        evaluate(model, dataset, batch_size=0)
    with pytest.raises(ConfigError, match="max_batches"):
        evaluate(model, dataset, max_batches=-1)
    with pytest.raises(ConfigError, match="the model is on cpu"):
        evaluate(model, dataset, device="meta")
