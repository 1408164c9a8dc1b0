"""Knowledge distillation from the unpruned model while fine-tuning the pruned one.

Hinton et al. (2015): the student matches the teacher's softened class probabilities,
``loss = alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)``; the ``T^2``
keeps the gradient scale independent of the temperature. Used as a training-loop callback:
``fit(pruned, splits, config, callbacks=[Distiller(original)])``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from prunekit.errors import ConfigError

__all__ = ["Distiller", "distillation_loss"]


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *,
                      temperature: float) -> torch.Tensor:
    """``T^2 * KL(teacher || student)`` on temperature-softened distributions, batch mean."""
    t = float(temperature)
    log_student = F.log_softmax(student_logits / t, dim=-1)
    log_teacher = F.log_softmax(teacher_logits / t, dim=-1)
    return F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean") * t * t


class Distiller:
    """A ``fit`` callback that mixes the teacher's soft targets into the loss.

    Args:
        teacher: the original (unpruned) model; a frozen copy in eval mode is kept, so the
            caller's model is never changed or trained.
        temperature: softening temperature ``T`` (> 0); 4 is the common choice for classifiers.
        alpha: weight of the distillation term in [0, 1]; ``1 - alpha`` weighs the hard labels.
    """

    def __init__(self, teacher: nn.Module, *, temperature: float = 4.0, alpha: float = 0.7) -> None:
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

    def on_loss(self, step: int, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                logits: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        """``alpha * KD + (1 - alpha) * loss`` for this batch."""
        device = logits.device
        if next(self.teacher.parameters(), torch.empty(0)).device != device:
            self.teacher.to(device)
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        kd = distillation_loss(logits, teacher_logits, temperature=self.temperature)
        return self.alpha * kd + (1.0 - self.alpha) * loss

    def get_params(self) -> dict[str, Any]:
        """The recipe stage's options (the teacher is the model before pruning)."""
        return {"temperature": self.temperature, "alpha": self.alpha}
