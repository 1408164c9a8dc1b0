"""Knowledge distillation from the unpruned model while fine-tuning the pruned one.

Hinton et al. (2015): the student matches the teacher's softened outputs,
``loss = alpha * KD + (1 - alpha) * task_loss``. KD is what the task's ``distill_loss`` says:
``T^2 * KL(softmax(t/T) || softmax(s/T))`` on logits for classification and per real token for
causal LMs (the ``T^2`` keeps the gradient scale independent of the temperature), and
``1 - cosine`` of sentence embeddings for the embedding task. Both models' outputs come from the
same ``task.outputs``. Used as a training-loop callback:
``train(pruned, data, config, task=task, callbacks=[Distiller(original)])``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.tasks import Classification, Task
from prunekit.tasks.base import soft_kl
from prunekit.tasks.batches import device_of

__all__ = ["Distiller", "distillation_loss"]


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *,
                      temperature: float) -> torch.Tensor:
    """``T^2 * KL(teacher || student)`` on temperature-softened distributions, mean per row."""
    return soft_kl(student_logits, teacher_logits, temperature=temperature)


class Distiller:
    """A training-loop callback that mixes the teacher's outputs into the loss.

    Args:
        teacher: the original (unpruned) model; a frozen copy in eval mode is kept, so the
            caller's model is never changed or trained.
        temperature: softening temperature ``T`` (> 0); 4 is the common choice for classifiers.
        alpha: weight of the distillation term in [0, 1]; ``1 - alpha`` weighs the task's loss.
        task: how outputs are read and compared; default: the task ``train`` runs with.
    """

    def __init__(self, teacher: nn.Module, *, temperature: float = 4.0, alpha: float = 0.7,
                 task: Task | None = None) -> None:
        if not temperature > 0:
            raise ConfigError(f"Distiller: temperature must be > 0; got {temperature}. Use e.g. 4.0.")
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"Distiller: alpha must be in [0, 1] (the weight of the teacher's "
                              f"term); got {alpha}. Use e.g. 0.7.")
        self.teacher = copy.deepcopy(teacher).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.task = task

    def on_train_begin(self, model: nn.Module, task: Task) -> None:
        """Take the training task unless one was given at construction."""
        if self.task is None:
            self.task = task

    def on_loss(self, step: int, model: nn.Module, batch: Any, outputs: torch.Tensor | None,
                loss: torch.Tensor) -> torch.Tensor:
        """``alpha * KD + (1 - alpha) * loss`` for this batch."""
        task = self.task if self.task is not None else Classification()
        if outputs is None:
            outputs = task.outputs(model, batch)
        if device_of(self.teacher) != outputs.device:
            self.teacher.to(outputs.device)
        with torch.no_grad():
            teacher_outputs = task.outputs(self.teacher, batch)
        compare = getattr(task, "distill_loss", None)
        if compare is not None:
            kd = compare(outputs, teacher_outputs, batch, temperature=self.temperature)
        else:
            kd = soft_kl(outputs, teacher_outputs, temperature=self.temperature)
        return self.alpha * kd + (1.0 - self.alpha) * loss

    def get_params(self) -> dict[str, Any]:
        """The recipe stage's options (the teacher is the model before pruning)."""
        return {"temperature": self.temperature, "alpha": self.alpha}
