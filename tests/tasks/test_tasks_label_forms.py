"""Labels and batches in the forms users' data comes in: ignored labels (-100), class probabilities,
regression or multi-label targets given to classification by mistake, and batches the model's
forward cannot take. Each is scored right or refused in one line, never a loss of 0."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from prunekit.errors import DataError
from prunekit.tasks import Classification, Custom


def _seg(classes: int = 3) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return nn.Conv2d(2, classes, 1), torch.randn(4, 2, 6, 6), torch.randint(0, classes, (4, 6, 6))


def test_ignored_labels_count_nowhere() -> None:
    model, x, labels = _seg()
    labels[:, :3] = -100  # void pixels: half of each image
    got = Classification().evaluate(model, [(x, labels)])
    with torch.no_grad():
        logits = model(x)
    valid = labels != -100
    assert got["count"] == int(valid.sum()) == 72
    assert got["loss"] == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-5)
    assert got["accuracy"] == pytest.approx(float((logits.argmax(1) == labels)[valid].float().mean()))
    assert Classification().correct(logits, (x, labels)) == (int((logits.argmax(1) == labels)[valid].sum()), 72)
    labels[:] = -100
    with pytest.raises(DataError, match="no sample to score .empty, all padding, or every label -100: ignored"):
        Classification().evaluate(model, [(x, labels)])


def test_class_probabilities_score_against_their_argmax() -> None:
    torch.manual_seed(0)
    model, x = nn.Linear(5, 4), torch.randn(4, 5)  # as many samples as classes: shapes alone cannot tell
    soft = torch.softmax(3 * torch.randn(4, 4), dim=1)
    got = Classification().evaluate(model, [(x, soft)])
    with torch.no_grad():
        logits = model(x)
    assert got["accuracy"] == pytest.approx(float((logits.argmax(1) == soft.argmax(1)).float().mean()))
    assert got["loss"] == pytest.approx(float(F.cross_entropy(logits, soft)), rel=1e-5)
    assert got["count"] == 4


@pytest.mark.parametrize("case, match", [
    ("one column", "have one class, so cross-entropy is 0"),
    ("regression columns", "are read as class probabilities, but these are not"),
    ("multi-label", "For multi-label 0/1 targets use tasks.Custom"),
    ("float indices", "class labels are whole numbers"),
])
def test_targets_that_are_not_classes_are_refused(case: str, match: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 5)
    model, y = {
        "one column": (nn.Linear(5, 1), torch.randn(8, 1)),
        "regression columns": (nn.Linear(5, 3), torch.randn(8, 3)),
        "multi-label": (nn.Linear(5, 3), torch.tensor([[1.0, 1.0, 0.0]] * 8)),
        "float indices": (nn.Linear(5, 3), torch.tensor([0.0, 1, 2, 0, 1, 2, 0, 1])),
    }[case]
    with pytest.raises(DataError, match=match) as raised:
        Classification().evaluate(model, [(x, y)])
    assert "\n" not in str(raised.value)
    with pytest.raises(DataError, match=match):
        Classification().loss(model, (x, y))


def test_batches_the_forward_cannot_take_are_one_line() -> None:
    model, x, y = nn.Linear(8, 3), torch.randn(4, 8), torch.tensor([0, 1, 2, 0])
    with pytest.raises(DataError, match=r"keys \['pixel_values'\] name none of Linear.forward's inputs \(input\)"):
        Classification().evaluate(model, [{"pixel_values": x, "labels": y}])
    with pytest.raises(DataError, match=r"Linear.forward\(input\) cannot take the batch's inputs \(2 positional\)"):
        Classification().evaluate(model, [(x, y, torch.arange(4))])

    class Broken(nn.Module):  # a TypeError inside a forward that takes the inputs is the model's own
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat(x, 1)

    with pytest.raises(TypeError, match="cat"):
        Classification().evaluate(Broken(), [(x, y)])


def test_custom_distillation_compares_outputs_by_mean_squared_error() -> None:
    student, teacher = torch.randn(6, 1), torch.randn(6, 1)  # one regression column: softened KL is 0
    task = Custom(lambda model, batch: model(batch[0]).sum())
    assert float(task.distill_loss(student, teacher, None, temperature=2.0)) == pytest.approx(
        float(F.mse_loss(student, teacher)))
    own = Custom(lambda model, batch: model(batch[0]).sum(), distill_fn=lambda s, t: (s - t).abs().mean())
    assert float(own.distill_loss(student, teacher, None, temperature=2.0)) == pytest.approx(
        float((student - teacher).abs().mean()))
    with pytest.raises(DataError, match="differ in shape"):
        task.distill_loss(student, teacher[:, :0], None, temperature=2.0)


@pytest.mark.parametrize("bad", [3, -1, 7])
def test_labels_outside_the_classes_are_one_line(bad: int) -> None:
    model, x, labels = _seg(classes=3)
    labels[1, 2, 2] = bad
    labels[0, 0, 0] = -100  # NOTE: ignored, not outside
    with pytest.raises(DataError, match=rf"label {bad} is outside the model's 3 classes \(0..2; -100 is ignored\)"):
        Classification().evaluate(model, [(x, labels)])
    torch.manual_seed(0)
    head = nn.Linear(5, 4)
    with pytest.raises(DataError, match="label 4 is outside the model's 4 classes"):
        Classification().loss(head, (torch.randn(3, 5), torch.tensor([0, 4, 1])))


def test_tied_logits_score_as_argmax_scores_them() -> None:
    # NOTE: int8 outputs tie often; the evaluation's accuracy must be the training loop's (argmax: first max)
    logits = torch.zeros(64, 10)
    logits[:, 3] = logits[:, 7] = 1.0  # two tied maxima in every row
    labels = torch.full((64,), 3)
    model = nn.Identity()
    got = Classification(top_k=1).evaluate(model, [(logits, labels)])
    assert got["accuracy"] == 1.0 == Classification().correct(logits, (logits, labels))[0] / 64
    assert Classification(top_k=2).evaluate(model, [(logits, torch.full((64,), 7))])["top2"] == 1.0
