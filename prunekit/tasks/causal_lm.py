"""Causal language modelling: next-token cross-entropy; the metric is perplexity (lower is better).

Batches: ``input_ids`` as a ``[B, T]`` tensor, a tuple ``(input_ids,)`` or ``(input_ids, labels)``,
or a mapping with ``input_ids`` and optionally ``attention_mask`` and ``labels``. Labels default
to ``input_ids`` with padding (``attention_mask == 0``) set to -100, the ignore index.

A model whose forward takes ``labels`` (Hugging Face ``...ForCausalLM``) computes its own loss
(``labels=input_ids``: it shifts them itself); any other model's logits ``[B, T, V]`` are scored
with the shifted cross-entropy, position t predicting token t + 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from prunekit.errors import DataError
from prunekit.tasks.base import BaseTask, soft_kl
from prunekit.tasks.batches import (
    call_model,
    device_of,
    logits_of,
    model_accepts,
    to_device,
)

__all__ = ["IGNORE_INDEX", "CausalLM"]

IGNORE_INDEX = -100

_FORMS = ("a [B, T] tensor of input_ids, (input_ids,) or (input_ids, labels), or a mapping with "
          "'input_ids' (and optionally 'attention_mask', 'labels')")


def _shifted_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of position t's logits against token t + 1 (ignoring -100)."""
    return F.cross_entropy(logits[..., :-1, :].reshape(-1, logits.shape[-1]).float(),
                           labels[..., 1:].reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")


class CausalLM(BaseTask):
    """Next-token prediction; ``evaluate`` gives ``loss`` (mean per predicted token),
    ``perplexity = exp(loss)`` and ``count`` (predicted tokens)."""

    name = "causal_lm"
    metric = "perplexity"
    higher_is_better = False

    def _split(self, batch: Any) -> tuple[tuple[Any, ...], dict[str, Any], Any]:
        ids, mask, labels = self._fields(batch)
        return (ids,), ({"attention_mask": mask} if mask is not None else {}), labels

    def _fields(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(input_ids, attention_mask or None, labels) of a batch."""
        mask = labels = None
        if isinstance(batch, torch.Tensor):
            ids = batch
        elif isinstance(batch, Mapping) and isinstance(batch.get("input_ids"), torch.Tensor):
            ids, mask, labels = batch["input_ids"], batch.get("attention_mask"), batch.get("labels")
        elif isinstance(batch, (tuple, list)) and 1 <= len(batch) <= 2:
            ids, labels = batch[0], (batch[1] if len(batch) == 2 else None)
        else:
            got = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
            raise DataError(f"CausalLM: expected {_FORMS}; got {got}. Fix: yield input_ids blocks, "
                            f"e.g. from prunekit.data.load_text.")
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.is_floating_point():
            shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
            raise DataError(f"CausalLM: expected input_ids as an integer [B, T] tensor; got {shape}. "
                            f"Fix: tokenise the text into blocks of token ids.")
        if labels is None:
            labels = ids if mask is None else ids.masked_fill(mask == 0, IGNORE_INDEX)
        return ids, mask, labels

    def _forward(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor | None, torch.Tensor,
                                                             torch.Tensor]:
        """(the model's own mean loss or None, logits, labels)."""
        ids, mask, labels = self._fields(to_device(batch, device_of(model)))
        kwargs: dict[str, Any] = {}
        if mask is not None and model_accepts(model, "attention_mask"):
            kwargs["attention_mask"] = mask
        own = model_accepts(model, "labels")
        if own:
            kwargs["labels"] = labels
        output = call_model(model, (ids,), kwargs)
        loss = getattr(output, "loss", None) if own else None
        return (loss if isinstance(loss, torch.Tensor) else None), logits_of(output), labels

    def outputs(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """The logits ``[B, T, V]`` (a forward pass without labels, so no loss is computed)."""
        ids, mask, _ = self._fields(to_device(batch, device_of(model)))
        kwargs = {"attention_mask": mask} if mask is not None and model_accepts(
            model, "attention_mask") else {}
        return logits_of(call_model(model, (ids,), kwargs))

    @staticmethod
    def _tokens(labels: torch.Tensor) -> int:
        return int((labels[..., 1:] != IGNORE_INDEX).sum())

    def loss_and_outputs(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's own loss when it returns one, else the shifted cross-entropy; the logits."""
        own, logits, labels = self._forward(model, batch)
        if own is not None:
            return own, logits
        return _shifted_sum(logits, labels) / max(self._tokens(labels), 1), logits

    def batch_sums(self, model: nn.Module, batch: Any) -> dict[str, float]:
        own, logits, labels = self._forward(model, batch)
        tokens = self._tokens(labels)
        # NOTE: the model's loss is a mean over this batch's predicted tokens; weigh it by them.
        total = float(own) * tokens if own is not None else float(_shifted_sum(logits, labels))
        return {"loss": total, "count": float(tokens)}

    def summarise(self, totals: dict[str, float]) -> dict[str, float]:
        """``loss`` (mean per predicted token), ``perplexity = exp(loss)``, ``count`` (tokens)."""
        count = totals.get("count", 0.0)
        loss = totals.get("loss", 0.0) / count
        perplexity = math.exp(loss) if loss < 700 else math.inf
        return {"loss": loss, "perplexity": perplexity, "count": int(count)}

    def distill_loss(self, student: torch.Tensor, teacher: torch.Tensor, batch: Any, *,
                     temperature: float) -> torch.Tensor:
        """KL on softened next-token distributions, mean over real (unpadded) positions."""
        mask = batch.get("attention_mask") if isinstance(batch, Mapping) else None
        if isinstance(mask, torch.Tensor) and student.shape == teacher.shape:  # NOTE: else soft_kl says why
            keep = mask.to(student.device).reshape(-1) != 0
            width = student.shape[-1]
            student, teacher = student.reshape(-1, width)[keep], teacher.reshape(-1, width)[keep]
        return soft_kl(student, teacher, temperature=temperature)

    def __repr__(self) -> str:
        return "CausalLM()"
