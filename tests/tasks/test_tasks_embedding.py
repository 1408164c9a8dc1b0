"""Embedding: mean-pooled hidden states; cosine to the teacher (1 for the teacher itself)."""

from __future__ import annotations

import pytest
import torch
from _tasks_fixtures import TokenEncoder, seeded, tiny_bert, token_batches

from prunekit.errors import ConfigError, DataError
from prunekit.tasks import Embedding, create, mean_pool


def test_mean_pool_ignores_padding() -> None:
    hidden = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    changed = hidden.clone()
    changed[0, 2:] = 100.0
    pooled = mean_pool(changed, mask)
    torch.testing.assert_close(pooled[0], hidden[0, :2].mean(0))
    torch.testing.assert_close(pooled[1], hidden[1].mean(0))


@pytest.mark.parametrize("build", [lambda: seeded(TokenEncoder), tiny_bert], ids=["plain", "bert"])
def test_teacher_itself_scores_cosine_one(build) -> None:
    teacher = build()
    metrics = Embedding(teacher=teacher).evaluate(teacher, token_batches())
    assert metrics["cosine"] == pytest.approx(1.0, abs=1e-5) and metrics["count"] == 12
    assert metrics["loss"] == pytest.approx(0.0, abs=1e-5)


def test_other_model_has_lower_cosine_and_a_gradient() -> None:
    teacher, student = seeded(TokenEncoder, 0), seeded(TokenEncoder, 1)
    task = create("embedding", teacher=teacher)
    batch = token_batches(1)[0]
    assert task.evaluate(student, [batch])["cosine"] < 0.99
    loss = task.loss(student, batch)
    loss.backward()
    assert float(loss) > 0 and student.embed.weight.grad is not None
    assert task.outputs(student, batch).shape == (4, 8)


def test_teacher_is_a_frozen_copy_and_required() -> None:
    teacher = seeded(TokenEncoder).train()
    task = Embedding()
    with pytest.raises(ConfigError, match="no teacher"):
        task.loss(teacher, token_batches(1)[0])
    task.teacher = teacher
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())
    assert task.teacher is not teacher and not task.teacher.training
    with pytest.raises(ConfigError, match="nn.Module"):
        task.teacher = "bert"  # type: ignore[assignment]


def test_bad_batch_is_clear() -> None:
    with pytest.raises(DataError, match="input_ids"):
        Embedding(teacher=seeded(TokenEncoder)).loss(seeded(TokenEncoder), {"text": torch.zeros(1)})
