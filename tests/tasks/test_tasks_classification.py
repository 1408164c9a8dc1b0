"""Classification: cross-entropy, top-1 and top-5 accuracy over any batches; batch forms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from prunekit.errors import ConfigError, DataError
from prunekit.tasks import Classification, create


@dataclass
class _Output:
    logits: torch.Tensor


class _HFStyle(nn.Module):
    """forward(pixel_values, labels=None) -> object with .logits, like transformers' classifiers."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.calls: list[set[str]] = []

    def forward(self, pixel_values: torch.Tensor, labels: Any = None) -> _Output:
        self.calls.append({"labels"} if labels is not None else set())
        return _Output(self.fc(pixel_values))


def test_metrics_on_known_logits() -> None:
    # NOTE: nn.Identity makes the inputs the logits, so the metrics are known exactly.
    logits = torch.tensor([[5.0, 4, 3, 2, 1, 0], [0, 1, 2, 3, 4, 5], [1, 2, 9, 3, 4, 0]])
    labels = torch.tensor([0, 1, 5])  # row 0 right; row 1 in top 5 only; row 2 wrong, not in top 5
    metrics = Classification().evaluate(nn.Identity(), [(logits, labels)])
    assert metrics["accuracy"] == pytest.approx(1 / 3) and metrics["top5"] == pytest.approx(2 / 3)
    assert metrics["loss"] == pytest.approx(float(F.cross_entropy(logits, labels)))
    assert metrics["count"] == 3
    split = Classification().evaluate(nn.Identity(), [(logits[:1], labels[:1]), (logits[1:], labels[1:])])
    assert split == pytest.approx(metrics)


def test_top_k_is_capped_by_the_classes_and_max_batches_caps() -> None:
    logits, labels = torch.randn(8, 3), torch.randint(0, 3, (8,))
    batches = [(logits[:4], labels[:4]), (logits[4:], labels[4:])]
    assert Classification().evaluate(nn.Identity(), batches)["top5"] == 1.0
    assert Classification().evaluate(nn.Identity(), batches, max_batches=1)["count"] == 4
    with pytest.raises(ConfigError, match="max_batches"):
        Classification().evaluate(nn.Identity(), batches, max_batches=0)


def test_dict_batches_go_to_the_model_as_keywords_without_labels() -> None:
    torch.manual_seed(0)
    model = _HFStyle()
    x, y = torch.randn(5, 4), torch.randint(0, 6, (5,))
    loss = create("classification").loss(model, {"pixel_values": x, "labels": y})
    torch.testing.assert_close(loss, F.cross_entropy(model.fc(x), y))
    assert model.calls == [set()]
    assert Classification().inputs({"pixel_values": x, "labels": y})[0] is x


def test_mode_is_restored_and_label_smoothing_applies_to_training_loss() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5)).train()
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    Classification().evaluate(model, [(x, y)])
    assert model.training
    model.eval()
    smooth = Classification(label_smoothing=0.2).loss(model, [x, y])
    torch.testing.assert_close(smooth, F.cross_entropy(model(x), y, label_smoothing=0.2))
    assert float(Classification(label_smoothing=0.2).evaluate(model, [(x, y)])["loss"]) == pytest.approx(
        float(F.cross_entropy(model(x), y).detach()))


def test_multi_input_tuple_uses_last_element_as_labels() -> None:
    class Two(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return a + b

    a, b, y = torch.randn(3, 4), torch.randn(3, 4), torch.tensor([0, 1, 2])
    torch.testing.assert_close(Classification().loss(Two(), (a, b, y)), F.cross_entropy(a + b, y))


@pytest.mark.parametrize("batch", [torch.randn(2, 3), (torch.randn(2, 3),), {"pixel_values": torch.randn(2, 3)}])
def test_batches_without_labels_are_clear(batch: Any) -> None:
    with pytest.raises(DataError, match="labels"):
        Classification().loss(nn.Identity(), batch)


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="label_smoothing"):
        Classification(label_smoothing=1.0)
    with pytest.raises(ConfigError, match="top_k"):
        Classification(top_k=0)


def test_outputs_need_no_labels() -> None:
    model, x = nn.Linear(4, 3), torch.randn(2, 4)
    for batch in (x, (x,), (x, torch.tensor([0, 1]))):
        torch.testing.assert_close(Classification().outputs(model, batch), model(x))
    hf = _HFStyle()
    torch.testing.assert_close(Classification().outputs(hf, {"pixel_values": x}), hf.fc(x))
