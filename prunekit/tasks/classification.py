"""Classification: cross-entropy on the logits; metrics loss, top-1 accuracy and top-5 accuracy.

Batches are ``(inputs..., labels)`` tuples or mappings with ``labels``/``label`` (the other
tensors go to the model as keywords, e.g. Hugging Face ``pixel_values``). Logits are ``[B, C]``
(or ``[B, C, ...]`` with labels ``[B, ...]``, e.g. per-pixel classes); the class axis is 1.
Labels of -100 (cross-entropy's ``ignore_index``: void pixels, padding) count nowhere; float labels
shaped as the logits are class probabilities (mixup, soft targets), scored against their argmax.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from prunekit.errors import ConfigError, DataError
from prunekit.tasks.base import BaseTask, soft_kl
from prunekit.tasks.batches import (
    TARGET_KEYS,
    call_model,
    device_of,
    logits_of,
    model_kwargs,
    to_device,
)

__all__ = ["Classification"]

IGNORE_INDEX = -100  # NOTE: F.cross_entropy's default: such labels add no loss and no count


class Classification(BaseTask):
    """Cross-entropy classification.

    Args:
        label_smoothing: cross-entropy label smoothing of the training loss in [0, 1)
            (evaluation always reports the plain cross-entropy).
        top_k: the second accuracy reported, as ``top{k}`` (5 gives ``top5``).
    """

    name = "classification"
    metric = "accuracy"
    higher_is_better = True

    def __init__(self, *, label_smoothing: float = 0.0, top_k: int = 5) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"Classification: 'label_smoothing' must be in [0, 1); got "
                              f"{label_smoothing}. Pass e.g. 0.1, or 0 for none.")
        if not isinstance(top_k, int) or top_k < 1:
            raise ConfigError(f"Classification: 'top_k' must be a positive whole number; got "
                              f"{top_k!r}. Pass e.g. 5.")
        self.label_smoothing = float(label_smoothing)
        self.top_k = top_k

    def _split(self, batch: Any) -> tuple[tuple[Any, ...], dict[str, Any], Any]:
        if isinstance(batch, Mapping):
            key = next((k for k in TARGET_KEYS if k in batch), None)
            if key is None:
                raise DataError(f"Classification: the batch has keys {sorted(batch)}; expected "
                                f"'labels' (or 'label') among them. Fix: yield the class labels "
                                f"under 'labels'.")
            return (), {k: v for k, v in batch.items() if k not in TARGET_KEYS}, batch[key]
        if isinstance(batch, (tuple, list)) and len(batch) >= 2:
            return tuple(batch[:-1]), {}, batch[-1]
        got = (f"a {type(batch).__name__} of length {len(batch)}"
               if isinstance(batch, (tuple, list)) else type(batch).__name__)
        raise DataError(f"Classification: expected a batch of (inputs, labels) or a mapping with "
                        f"'labels'; got {got}. Fix: yield (inputs, labels) pairs.")

    @staticmethod
    def _split_inputs(batch: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The model inputs alone; labels may be missing (distilling on unlabelled batches)."""
        if isinstance(batch, Mapping):
            return (), {k: v for k, v in batch.items() if k not in TARGET_KEYS}
        if isinstance(batch, (tuple, list)):
            return tuple(batch[:-1]) if len(batch) >= 2 else tuple(batch), {}
        return (batch,), {}

    def outputs(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """The logits of ``batch`` (a forward pass only; labels are not needed)."""
        args, kwargs = self._split_inputs(to_device(batch, device_of(model)))
        return logits_of(call_model(model, args, model_kwargs(model, kwargs) if kwargs else {}))

    def _forward(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, labels) of a batch moved to the model's device."""
        args, kwargs, labels = self._split(to_device(batch, device_of(model)))
        kwargs = model_kwargs(model, kwargs) if kwargs else {}
        logits = logits_of(call_model(model, args, kwargs))
        _check_fit(logits, labels)
        return logits, labels

    def loss_and_outputs(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy (with ``label_smoothing``) and the logits."""
        logits, labels = self._forward(model, batch)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        return loss, logits

    def correct(self, logits: torch.Tensor, batch: Any) -> tuple[int, int]:
        """(top-1 correct, count) of given logits on ``batch`` (the training loop's accuracy): one
        per sample, or per position for per-position logits; ignored labels count nowhere."""
        hard, valid = _targets(logits, self._split(batch)[2].to(logits.device))
        return int(((logits.detach().argmax(dim=1) == hard) & valid).sum()), int(valid.sum())

    def batch_sums(self, model: nn.Module, batch: Any) -> dict[str, float]:
        logits, labels = self._forward(model, batch)
        hard, valid = _targets(logits, labels)
        k = min(self.top_k, logits.shape[1])
        # NOTE: a stable sort orders tied logits (frequent in int8 outputs) by class index, as argmax
        # (the training loop's accuracy) picks the first; topk's order among ties is unspecified
        top = logits.sort(dim=1, descending=True, stable=True).indices.narrow(1, 0, k)
        return {
            "loss": float(F.cross_entropy(logits, labels, reduction="sum")),
            "correct": float(((top.select(1, 0) == hard) & valid).sum()),
            "correct_k": float(((top == hard.unsqueeze(1)).any(dim=1) & valid).sum()),
            "count": float(valid.sum()),
        }

    def summarise(self, totals: dict[str, float]) -> dict[str, float]:
        """``loss`` (mean cross-entropy), ``accuracy`` (top-1), ``top{k}`` and ``count``."""
        n = totals["count"]
        if not n:
            raise DataError(f"Classification: every label seen is {IGNORE_INDEX} (ignored), so there is "
                            f"nothing to score. Fix: evaluate on batches with real class labels.")
        return {"loss": totals.get("loss", 0.0) / n, "accuracy": totals.get("correct", 0.0) / n,
                f"top{self.top_k}": totals.get("correct_k", 0.0) / n, "count": int(n)}

    def distill_loss(self, student: torch.Tensor, teacher: torch.Tensor, batch: Any, *,
                     temperature: float) -> torch.Tensor:
        """KL on softened logits, per sample (per position when logits are ``[B, C, ...]``)."""
        if student.dim() > 2:
            student, teacher = student.movedim(1, -1), teacher.movedim(1, -1)
        return soft_kl(student, teacher, temperature=temperature)

    def __repr__(self) -> str:
        return f"Classification(label_smoothing={self.label_smoothing}, top_k={self.top_k})"


def _targets(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(class indices, which of them count) of ``labels``: probabilities' argmax (all count), or
    the indices themselves with the ignored ones (-100) left out."""
    if labels.is_floating_point() and labels.shape == logits.shape:
        hard = labels.argmax(dim=1)
        return hard, torch.ones_like(hard, dtype=torch.bool)
    return labels, labels != IGNORE_INDEX


def _check_fit(logits: torch.Tensor, labels: Any) -> None:
    """Labels ``[B]`` for logits ``[B, C]``, ``[B, ...]`` for per-position logits ``[B, C, ...]`` (or
    class probabilities shaped as the logits): anything else is one line here, not cross-entropy's
    error (a backbone's feature maps scored against image labels), and never a loss of 0 (one
    output column, or regression targets read as probabilities)."""
    if not isinstance(labels, torch.Tensor) or not isinstance(logits, torch.Tensor) or logits.dim() < 2:
        return
    regression = ("For regression, or one logit per sample, use tasks.Custom with your loss, e.g. "
                  "Custom(lambda model, batch: F.mse_loss(model(batch[0]), batch[1])).")
    if logits.shape[1] == 1:
        raise DataError(f"Classification: the model's logits {tuple(logits.shape)} have one class, so "
                        f"cross-entropy is 0 whatever the weights. {regression}")
    if labels.is_floating_point() and labels.shape == logits.shape:
        sums = labels.sum(dim=1)
        if bool((labels < 0).any() or (labels > 1).any() or not torch.allclose(sums, torch.ones_like(sums),
                                                                                  atol=1e-3)):
            raise DataError(f"Classification: float labels shaped like the logits {tuple(logits.shape)} are "
                            f"read as class probabilities, but these are not (values outside [0, 1] or rows "
                            f"not summing to 1). For multi-label 0/1 targets use tasks.Custom with "
                            f"F.binary_cross_entropy_with_logits. {regression}")
        return
    if labels.shape == logits.shape[:1] + logits.shape[2:]:
        if labels.is_floating_point():
            raise DataError(f"Classification: the labels are {str(labels.dtype).removeprefix('torch.')}; "
                            f"class labels are whole numbers (labels.long()). {regression}")
        classes = logits.shape[1]
        outside = ((labels < 0) & (labels != IGNORE_INDEX)) | (labels >= classes)
        if bool(outside.any()):  # NOTE: cross-entropy's own error is an IndexError (a device assert on CUDA)
            raise DataError(f"Classification: label {int(labels[outside].flatten()[0])} is outside the model's "
                            f"{classes} classes (0..{classes - 1}; {IGNORE_INDEX} is ignored). Give the model as "
                            f"many outputs as the data has classes, or fix the labels.")
        return
    raise DataError(f"Classification: the model's logits {tuple(logits.shape)} do not fit labels "
                    f"{tuple(labels.shape)}; expected labels [batch] for logits [batch, classes], or [batch, "
                    f"H, W] for per-pixel logits [batch, classes, H, W]. Give the model a classifier head, or "
                    f"pick the task its output fits (embedding, or custom with your loss).")
