"""CausalLM: the model's own loss (HF) or shifted cross-entropy; perplexity = exp(mean loss)."""

from __future__ import annotations

import math

import pytest
import torch
from _tasks_fixtures import TokenLM, seeded, tiny_gpt2, tiny_llama, token_batches
from torch.nn import functional as F

from prunekit.errors import DataError
from prunekit.tasks import CausalLM, create


def _shifted(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
    """Summed next-token cross-entropy and the number of predicted tokens (ignoring -100)."""
    flat = logits.detach()[:, :-1].reshape(-1, logits.shape[-1])
    target = labels[:, 1:].reshape(-1)
    keep = target != -100
    return float(F.cross_entropy(flat[keep], target[keep], reduction="sum")), int(keep.sum())


@pytest.mark.parametrize("build", [tiny_gpt2, tiny_llama], ids=["gpt2", "llama"])
def test_hf_model_own_loss_and_perplexity_is_exp_mean_loss(build) -> None:
    model, task, batches = build(), CausalLM(), token_batches()
    metrics = task.evaluate(model, batches)
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]), rel=1e-12)
    total = count = 0.0
    with torch.no_grad():
        for batch in batches:
            labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            s, n = _shifted(logits, labels)
            total, count = total + s, count + n
    assert metrics["count"] == count == 3 * (4 * 7 - 2)  # padding of row 0 is not predicted
    assert metrics["loss"] == pytest.approx(total / count, rel=1e-5)
    loss = task.loss(model, batches[0])
    assert loss.requires_grad and loss.dim() == 0


def test_hf_loss_is_the_models_own() -> None:
    model, batch = tiny_gpt2(), token_batches(1)[0]
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    own = model(**batch, labels=labels).loss
    torch.testing.assert_close(CausalLM().loss(model, batch), own)
    outputs = CausalLM().outputs(model, batch)
    assert outputs.shape == (4, 8, 24)


def test_plain_module_shifted_cross_entropy_on_tensors_and_tuples() -> None:
    model = seeded(TokenLM)
    ids = token_batches(1, padded=False)[0]["input_ids"]
    s, n = _shifted(model(ids), ids)
    for batch in (ids, (ids,), [ids], {"input_ids": ids}):
        assert float(CausalLM().loss(model, batch).detach()) == pytest.approx(s / n, rel=1e-5)
    labels = ids.clone()
    labels[:, :4] = -100
    s2, n2 = _shifted(model(ids), labels)
    assert float(CausalLM().loss(model, (ids, labels)).detach()) == pytest.approx(s2 / n2, rel=1e-5)
    metrics = create("causal_lm").evaluate(model, [ids, ids], max_batches=1)
    assert metrics["count"] == n and metrics["perplexity"] == pytest.approx(math.exp(s / n), rel=1e-5)


def test_metadata_and_bad_batches() -> None:
    task = CausalLM()
    assert (task.name, task.metric, task.higher_is_better) == ("causal_lm", "perplexity", False)
    with pytest.raises(DataError, match="input_ids"):
        task.loss(seeded(TokenLM), {"text": torch.zeros(2)})
    with pytest.raises(DataError, match="integer"):
        task.loss(seeded(TokenLM), torch.zeros(2, 3))


def test_distill_loss_ignores_padding() -> None:
    student, teacher = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    batch = {"input_ids": torch.zeros(2, 3, dtype=torch.long), "attention_mask": mask}
    changed = teacher.clone()
    changed[0, 2] += 10.0  # a padded position: must not matter
    kd = CausalLM().distill_loss(student, teacher, batch, temperature=2.0)
    torch.testing.assert_close(kd, CausalLM().distill_loss(student, changed, batch, temperature=2.0))
    assert float(CausalLM().distill_loss(student, student, batch, temperature=2.0)) == pytest.approx(0, abs=1e-6)


def test_distill_loss_refuses_a_teacher_with_another_vocabulary() -> None:
    from prunekit.errors import ConfigError

    student, teacher = torch.randn(2, 4, 10), torch.randn(2, 4, 5)  # NOTE: 80 entries: teacher rows would pair up
    batch = {"input_ids": torch.zeros(2, 4, dtype=torch.long), "attention_mask": torch.ones(2, 4, dtype=torch.long)}
    with pytest.raises(ConfigError, match=r"teacher's outputs have shape \(2, 4, 5\) but the student's \(2, 4, 10\)"):
        CausalLM().distill_loss(student, teacher, batch, temperature=2.0)
