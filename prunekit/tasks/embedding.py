"""Sentence embeddings: the mean-pooled last hidden state, scored by cosine to a teacher model.

The teacher is the dense model the pruned one came from, given at construction
(``Embedding(teacher=dense)``) or set later (``task.teacher = dense``, as a workflow does). The
loss is ``1 - cosine(student, teacher)`` per sentence, averaged; ``evaluate`` reports the mean
``cosine`` (1 when the model is the teacher itself).

Batches: ``input_ids`` as a ``[B, T]`` tensor, a tuple ``(input_ids,)`` or
``(input_ids, attention_mask)``, or a mapping with ``input_ids`` and ``attention_mask`` (other keys,
such as labels, are ignored). The model returns ``last_hidden_state`` (Hugging Face ``AutoModel``),
a ``[B, T, H]`` tensor (pooled here) or an already pooled ``[B, H]`` tensor.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from prunekit.errors import ConfigError, DataError
from prunekit.tasks.base import BaseTask
from prunekit.tasks.batches import call_model, device_of, model_accepts, to_device

__all__ = ["Embedding", "mean_pool"]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``[B, T, H]`` hidden states averaged over the positions where ``mask`` ``[B, T]`` is 1."""
    if mask is None:
        return hidden.mean(dim=1)
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def _hidden_of(output: Any) -> torch.Tensor:
    """The last hidden state (or pooled embedding) in a model's output."""
    if isinstance(output, torch.Tensor):
        return output
    for name in ("last_hidden_state", "embeddings", "sentence_embedding"):
        found = getattr(output, name, None)
        if found is None and isinstance(output, Mapping):
            found = output.get(name)
        if isinstance(found, torch.Tensor):
            return found
    hidden_states = getattr(output, "hidden_states", None)
    if isinstance(hidden_states, (tuple, list)) and hidden_states:
        return hidden_states[-1]
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise DataError(f"Embedding: the model returned {type(output).__name__}; expected a "
                    f"last_hidden_state ([B, T, H]) or an embedding tensor. Fix: load the model "
                    f"with transformers.AutoModel (not ...ForCausalLM), or return the hidden states.")


class Embedding(BaseTask):
    """Cosine to a teacher's sentence embeddings.

    Args:
        teacher: the dense model; a frozen copy in eval mode is kept, so the caller's model is
            never changed. None until set through the ``teacher`` property.
    """

    name = "embedding"
    metric = "cosine"
    higher_is_better = True

    def __init__(self, teacher: nn.Module | None = None) -> None:
        self._teacher: nn.Module | None = None
        if teacher is not None:
            self.teacher = teacher

    @property
    def teacher(self) -> nn.Module | None:
        """The frozen copy of the teacher model (None until set)."""
        return self._teacher

    @teacher.setter
    def teacher(self, model: nn.Module | None) -> None:
        if model is not None and not isinstance(model, nn.Module):
            raise ConfigError(f"Embedding: 'teacher' must be an nn.Module (the dense model); got "
                              f"{type(model).__name__}. Pass the model before pruning.")
        frozen = None if model is None else copy.deepcopy(model).eval()
        for p in (frozen.parameters() if frozen is not None else ()):
            p.requires_grad_(False)
        self._teacher = frozen

    def _split(self, batch: Any) -> tuple[tuple[Any, ...], dict[str, Any], Any]:
        ids, mask = self._fields(batch)
        return (ids,), ({"attention_mask": mask} if mask is not None else {}), None

    @staticmethod
    def _fields(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        if isinstance(batch, torch.Tensor):
            return batch, None
        if isinstance(batch, Mapping) and isinstance(batch.get("input_ids"), torch.Tensor):
            return batch["input_ids"], batch.get("attention_mask")
        if isinstance(batch, (tuple, list)) and 1 <= len(batch) <= 2:
            return batch[0], (batch[1] if len(batch) == 2 else None)
        got = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
        raise DataError(f"Embedding: expected input_ids (a tensor, (input_ids, attention_mask) or a "
                        f"mapping with 'input_ids'); got {got}. Fix: yield tokenised sentences.")

    def outputs(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """The model's ``[B, H]`` sentence embeddings (mean-pooled with the attention mask)."""
        ids, mask = self._fields(to_device(batch, device_of(model)))
        kwargs = {"attention_mask": mask} if mask is not None and model_accepts(
            model, "attention_mask") else {}
        hidden = _hidden_of(call_model(model, (ids,), kwargs))
        return mean_pool(hidden, mask) if hidden.dim() == 3 else hidden

    def _target(self, batch: Any, device: torch.device) -> torch.Tensor:
        """The teacher's embeddings of ``batch`` (no gradient)."""
        if self._teacher is None:
            raise ConfigError("Embedding: no teacher model is set; expected the dense model whose "
                              "embeddings the pruned one should match. Fix: Embedding(teacher=dense) "
                              "or task.teacher = dense.")
        if device_of(self._teacher) != device:
            self._teacher.to(device)
        with torch.no_grad():
            return self.outputs(self._teacher, batch)

    def loss_and_outputs(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``mean(1 - cosine(student, teacher))`` and the student's embeddings."""
        student = self.outputs(model, batch)
        cosine = F.cosine_similarity(student, self._target(batch, student.device).to(student.dtype),
                                     dim=-1)
        return (1.0 - cosine).mean(), student

    def distill_loss(self, student: torch.Tensor, teacher: torch.Tensor, batch: Any, *,
                     temperature: float) -> torch.Tensor:
        """``mean(1 - cosine)`` between embeddings (the temperature does not apply)."""
        return (1.0 - F.cosine_similarity(student, teacher.to(student.dtype), dim=-1)).mean()

    def batch_sums(self, model: nn.Module, batch: Any) -> dict[str, float]:
        student = self.outputs(model, batch)
        cosine = F.cosine_similarity(student.float(), self._target(batch, student.device).float(),
                                     dim=-1)
        return {"cosine": float(cosine.sum()), "count": float(cosine.numel())}

    def summarise(self, totals: dict[str, float]) -> dict[str, float]:
        """``cosine`` (mean over sentences), ``loss = 1 - cosine`` and ``count`` (sentences)."""
        count = totals.get("count", 0.0)
        cosine = totals.get("cosine", 0.0) / count
        return {"cosine": cosine, "loss": 1.0 - cosine, "count": int(count)}

    def __repr__(self) -> str:
        return f"Embedding(teacher={'set' if self._teacher is not None else None})"
