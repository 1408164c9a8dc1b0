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
            caller's model is never changed or trained. The copy leaves out the forward hooks
            prunekit put on the model (e.g. :class:`~prunekit.gates.ChannelGates`' gates): the
            teacher computes what the model computes without them; the user's own hooks are kept.
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
        self.teacher = _frozen_copy(teacher)
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


def _frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode, without the forward hooks prunekit installed on it.

    Training-time hooks such as the gates' reach back to the object that installed them (a gate
    hook scales by the student's current gate draws), so a copy carrying them would be gated by the
    student, and fail when the teacher runs before the student has drawn. They are taken off the
    model for the copy and put back in their order, so the caller's model keeps them.
    """
    taken: list[tuple[dict[int, Any], list[tuple[int, Any]]]] = []
    for module in model.modules():
        for hooks in (module._forward_pre_hooks, module._forward_hooks):
            if any(_is_prunekit_hook(hook) for hook in hooks.values()):
                taken.append((hooks, list(hooks.items())))
                for key in [k for k, hook in hooks.items() if _is_prunekit_hook(hook)]:
                    del hooks[key]
    try:
        teacher = copy.deepcopy(model)
    finally:
        for hooks, items in taken:
            hooks.clear()
            hooks.update(items)
    return teacher.eval()


def _is_prunekit_hook(hook: Any) -> bool:
    """True for a hook defined in prunekit's code (a function, closure, bound method or callable).

    NOTE: prunekit leaves hooks on a model only while training (gates); the hooks it installs to
    measure or calibrate are removed before it returns. A hook from anywhere else (the user's,
    torch's weight_norm) is part of what the model computes and stays on the teacher.
    """
    owner = getattr(hook, "__module__", None) or type(hook).__module__
    return isinstance(owner, str) and (owner == "prunekit" or owner.startswith("prunekit."))
