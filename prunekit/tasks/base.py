"""The Task interface: how a batch becomes a differentiable loss, what distillation compares, and
how a model is scored on an iterable of batches.

:class:`BaseTask` holds what every built-in task shares: evaluation (eval mode and ``no_grad``,
restored afterwards; sums over batches, capped by ``max_batches``) and the distillation term
(KL on softened logits, Hinton et al. 2015). A task subclass writes ``_split`` (batch -> inputs and
target), ``loss_and_outputs`` and ``batch_sums`` / ``summarise``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn
from torch.nn import functional as F

from prunekit._modes import modes_of, restore_modes
from prunekit.errors import ConfigError, DataError
from prunekit.tasks.batches import device_of, to_device

__all__ = ["BaseTask", "Metrics", "Task", "capped", "no_samples", "soft_kl"]


class Metrics(dict):  # type: ignore[type-arg]
    """A task's metrics by name, readable as keys or attributes: ``m["accuracy"] == m.accuracy``.

    A plain dict otherwise (JSON-ready); like scikit-learn's ``Bunch``. Every task's ``evaluate``
    returns one, e.g. ``{"loss", "accuracy", "top5", "count"}`` for classification.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no metric '{name}'; this task reports {sorted(self)}") from None



@runtime_checkable
class Task(Protocol):
    """What "good" means for a model: a loss and a metric for a batch (see ``prunekit.tasks``)."""

    name: str
    metric: str
    higher_is_better: bool

    def inputs(self, batch: Any) -> tuple[Any, ...]:
        """The positional model inputs of ``batch`` (for tracing and profiling)."""
        ...

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """A scalar, differentiable loss of ``model`` on ``batch``."""
        ...

    def outputs(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """What distillation compares: logits, or pooled hidden states."""
        ...

    def evaluate(self, model: nn.Module, batches: Iterable[Any], *,
                 max_batches: int | None = None) -> dict[str, float]:
        """Metrics of ``model`` over ``batches`` (at most ``max_batches`` of them)."""
        ...


def soft_kl(student: torch.Tensor, teacher: torch.Tensor, *, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))`` over the last axis, mean over rows.

    Leading axes are flattened into rows, so ``[B, C]`` classifier logits and ``[N, V]`` token
    logits alike give the mean per-sample (per-token) divergence. The ``T^2`` keeps the gradient
    scale independent of the temperature (Hinton et al., 2015).
    """
    if student.shape != teacher.shape:
        # NOTE: reshaping the teacher with the student's width would mix rows without an error
        # whenever the sizes happen to divide (a 5-class teacher on a 10-class student at batch 2).
        raise ConfigError(f"soft_kl: the teacher's outputs have shape {tuple(teacher.shape)} but the student's "
                          f"{tuple(student.shape)}; distillation compares them entry by entry. Fix: distill "
                          f"from a teacher with the student's output classes (vocabulary).")
    t = float(temperature)
    width = student.shape[-1]
    log_student = F.log_softmax(student.reshape(-1, width) / t, dim=-1)
    log_teacher = F.log_softmax(teacher.reshape(-1, width).to(student.dtype) / t, dim=-1)
    return F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean") * t * t


def capped(batches: Iterable[Any], max_batches: int | None, *, owner: str) -> Iterator[Any]:
    """The first ``max_batches`` of ``batches`` (all when None); a bad cap is a ConfigError."""
    if max_batches is not None and (isinstance(max_batches, bool) or not isinstance(max_batches, int)
                                    or max_batches < 1):
        raise ConfigError(f"{owner}: 'max_batches' must be a positive whole number or None; got "
                          f"{max_batches!r}. Pass e.g. 10 for a quick estimate, or None for all.")
    return islice(batches, max_batches)


def no_samples(owner: str, batches: int) -> DataError:
    """The error for an evaluation over zero samples: a metric of 0.0 there would pass any budget."""
    got = ("no batches" if batches == 0 else
           f"{batches} batch(es) with no sample to score (empty, all padding, or every label -100: ignored)")
    return DataError(f"{owner}: the evaluation data yielded {got}; expected at least one sample. Fix: pass "
                     f"a non-empty loader (a DataLoader with drop_last=True yields nothing when the split "
                     f"has fewer samples than batch_size: use drop_last=False or a smaller batch_size).")


class BaseTask:
    """Shared machinery of the built-in tasks; subclasses set ``name``, ``metric`` and
    ``higher_is_better`` and implement ``_split``, ``loss_and_outputs``, ``batch_sums`` and
    ``summarise``."""

    name: str = "task"
    metric: str = "loss"
    higher_is_better: bool = False

    def inputs(self, batch: Any) -> tuple[Any, ...]:
        """The positional model inputs of ``batch`` (keyword inputs of a mapping are left out)."""
        args, kwargs, _ = self._split(batch)
        if args:
            return tuple(args)
        return tuple(kwargs.values())[:1]

    def keyword_inputs(self, batch: Any) -> dict[str, Any]:
        """The keyword model inputs of ``batch`` that :meth:`inputs` leaves out (e.g. an attention
        mask): what an export must also take for the file to compute what the model does."""
        args, kwargs, _ = self._split(batch)
        return dict(kwargs) if args else dict(list(kwargs.items())[1:])

    def _split(self, batch: Any) -> tuple[tuple[Any, ...], dict[str, Any], Any]:
        """``(positional inputs, keyword inputs, target)`` of a batch."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """A scalar, differentiable loss of ``model`` on ``batch`` (moved to the model's device)."""
        return self.loss_and_outputs(model, batch)[0]

    def outputs(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """What distillation compares for this task (logits unless a task says otherwise)."""
        return self.loss_and_outputs(model, batch)[1]

    def loss_and_outputs(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss and the outputs from one forward pass (the training loop calls this)."""
        raise NotImplementedError

    def distill_loss(self, student: torch.Tensor, teacher: torch.Tensor, batch: Any, *,
                     temperature: float) -> torch.Tensor:
        """The distillation term between student and teacher outputs: KL on softened logits."""
        return soft_kl(student, teacher, temperature=temperature)

    def batch_sums(self, model: nn.Module, batch: Any) -> dict[str, float]:
        """Sums over one batch (e.g. summed loss, correct predictions, count) for :meth:`evaluate`."""
        raise NotImplementedError

    def summarise(self, totals: dict[str, float]) -> dict[str, float]:
        """The metrics from the sums over every batch (``evaluate`` has checked ``count > 0``)."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Any], *,
                 max_batches: int | None = None) -> Metrics:
        """Metrics of ``model`` over ``batches`` in eval mode; the model's mode is restored. No
        batches, or a ``count`` of 0 samples (tokens), is a DataError."""
        owner = f"{type(self).__name__}.evaluate"
        limited = capped(batches, max_batches, owner=owner)
        device = device_of(model)
        modes = modes_of(model)
        model.eval()
        totals: dict[str, float] = {}
        seen = 0
        try:
            for batch in limited:
                seen += 1
                for key, value in self.batch_sums(model, to_device(batch, device)).items():
                    totals[key] = totals.get(key, 0.0) + float(value)
        finally:
            restore_modes(modes)
        if seen == 0 or totals.get("count", 1.0) <= 0:
            raise no_samples(owner, seen)
        return Metrics(self.summarise(totals))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
