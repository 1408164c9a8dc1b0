"""A user's own task: ``loss_fn(model, batch) -> Tensor`` and optionally
``metric_fn(model, batches) -> float | dict``.

``evaluate`` reports ``metric_fn``'s result; without ``metric_fn`` the headline metric is the mean
loss (lower is better). Batches reach the
functions already on the model's device. ``outputs`` (for distillation) calls the model on the
batch's inputs unless ``outputs_fn(model, batch)`` is given; distillation compares the student's and
the teacher's outputs by mean squared error (right for any output: values, embeddings, logits),
unless ``distill_fn(student, teacher)`` is given.

Which items of a batch are the model's inputs (what tracing, profiling, export and calibration run
the model on): ``inputs_fn(batch)`` when given; else a tuple's items but the last (``(x, y)``,
``(x1, x2, y)``), or a mapping's first non-label value as the traced input and its other values as
keywords (Hugging Face ``input_ids`` + ``attention_mask``). Other layouts, such as
``{"x1", "x2", "target"}`` for ``forward(x1, x2)`` or ``((x1, x2), y, weight)``, need ``inputs_fn``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from prunekit._modes import modes_of, restore_modes
from prunekit.errors import ConfigError, DataError
from prunekit.tasks.base import BaseTask, Metrics, capped, no_samples
from prunekit.tasks.batches import (
    TARGET_KEYS,
    batch_size_of,
    call_model,
    device_of,
    logits_of,
    model_kwargs,
    to_device,
)

__all__ = ["Custom"]

_NONE = object()  # NOTE: what an exhausted iterator gives ``next`` (a batch may be None-like)

LossFn = Callable[[nn.Module, Any], torch.Tensor]
MetricFn = Callable[[nn.Module, Iterable[Any]], "float | Mapping[str, float]"]
InputsFn = Callable[[Any], "torch.Tensor | tuple[torch.Tensor, ...]"]


class Custom(BaseTask):
    """A task made of the user's functions.

    Args:
        loss_fn: ``loss_fn(model, batch)`` -> scalar tensor with a gradient.
        metric_fn: ``metric_fn(model, batches)`` -> a number (reported as ``metric``) or a dict of
            numbers (which must hold ``metric``); None reports the mean loss.
        metric: the headline metric's name (default "metric"; "loss" without ``metric_fn``).
        higher_is_better: whether a larger ``metric`` is better (default True; False without
            ``metric_fn``).
        outputs_fn: ``outputs_fn(model, batch)`` -> what distillation compares (default: the
            model's output on the batch's inputs).
        inputs_fn: ``inputs_fn(batch)`` -> the model's positional inputs, a tensor or a tuple of
            them, e.g. ``lambda b: (b["x1"], b["x2"])`` (default: see the module docstring).
        distill_fn: ``distill_fn(student_outputs, teacher_outputs)`` -> the scalar distillation
            loss (default: mean squared error; e.g. ``lambda s, t: soft_kl(s, t, temperature=2.0)``
            for logits, where the Distiller's temperature does not apply).
    """

    name = "custom"

    def __init__(self, loss_fn: LossFn, metric_fn: MetricFn | None = None, metric: str | None = None,
                 higher_is_better: bool | None = None, *,
                 outputs_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None,
                 inputs_fn: InputsFn | None = None,
                 distill_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> None:
        for label, fn in (("loss_fn", loss_fn), ("metric_fn", metric_fn), ("outputs_fn", outputs_fn),
                          ("inputs_fn", inputs_fn), ("distill_fn", distill_fn)):
            if fn is not None and not callable(fn):
                raise ConfigError(f"Custom: '{label}' must be a function; got {type(fn).__name__}. "
                                  f"Pass e.g. lambda model, batch: ...")
        if loss_fn is None:
            raise ConfigError("Custom: 'loss_fn' is required; got None. Pass loss_fn(model, batch) "
                              "returning a scalar tensor.")
        if metric_fn is None and (metric not in (None, "loss") or higher_is_better):
            raise ConfigError(f"Custom: metric={metric!r} / higher_is_better={higher_is_better!r} "
                              f"need a metric_fn; got none (the metric is then the mean loss). Fix: "
                              f"pass metric_fn(model, batches), or drop metric/higher_is_better.")
        self.loss_fn, self.metric_fn, self.outputs_fn = loss_fn, metric_fn, outputs_fn
        self.inputs_fn, self.distill_fn = inputs_fn, distill_fn
        self.metric = metric or ("metric" if metric_fn is not None else "loss")
        self.higher_is_better = (metric_fn is not None) if higher_is_better is None else higher_is_better

    def _split(self, batch: Any) -> tuple[tuple[Any, ...], dict[str, Any], Any]:
        if self.inputs_fn is not None:
            given = self.inputs_fn(batch)
            return (tuple(given) if isinstance(given, (tuple, list)) else (given,)), {}, None
        if isinstance(batch, Mapping):
            return (), {k: v for k, v in batch.items() if k not in TARGET_KEYS}, None
        if isinstance(batch, (tuple, list)):
            return (tuple(batch[:-1]) if len(batch) > 1 else tuple(batch)), {}, None
        return (batch,), {}, None

    def inputs(self, batch: Any) -> tuple[Any, ...]:
        """The positional model inputs of ``batch``, checked to be tensors (tracing runs them)."""
        found = super().inputs(batch)
        for i, x in enumerate(found):
            if not isinstance(x, torch.Tensor):
                how = "inputs_fn's" if self.inputs_fn is not None else "the batch's (all items but the last)"
                raise DataError(f"Custom: {how} model input {i} is a {type(x).__name__}; expected tensors. "
                                f"Fix: pass Custom(..., inputs_fn=lambda batch: ...) returning the model's "
                                f"inputs, e.g. lambda b: tuple(b[0]) for ((x1, x2), y) batches.")
        return found

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """``loss_fn(model, batch)``, checked to be a scalar tensor."""
        value = self.loss_fn(model, to_device(batch, device_of(model)))
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise DataError(f"Custom: loss_fn must return a scalar tensor; got {got}. Fix: reduce "
                            f"the loss, e.g. with .mean().")
        return value.reshape(())

    def outputs(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """``outputs_fn(model, batch)``, else the model's logits on the batch's inputs."""
        batch = to_device(batch, device_of(model))
        if self.outputs_fn is not None:
            return self.outputs_fn(model, batch)
        args, kwargs, _ = self._split(batch)
        return logits_of(call_model(model, args, model_kwargs(model, kwargs) if kwargs else {}),
                         what="outputs")

    def distill_loss(self, student: torch.Tensor, teacher: torch.Tensor, batch: Any, *,
                     temperature: float) -> torch.Tensor:
        """``distill_fn(student, teacher)``, else their mean squared error: a softened KL (the
        classification default) is 0 for a one-column regression output and compares only the
        differences between a vector's entries."""
        if self.distill_fn is not None:
            return self.distill_fn(student, teacher)
        if student.shape != teacher.shape:
            raise DataError(f"Custom: the student's outputs {tuple(student.shape)} and the teacher's "
                            f"{tuple(teacher.shape)} differ in shape, so they cannot be compared. Fix: pass "
                            f"Custom(..., distill_fn=lambda student, teacher: ...) or outputs_fn.")
        return torch.nn.functional.mse_loss(student, teacher.to(student.dtype))

    def loss_and_outputs(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        """The loss; outputs are None (computed only when a callback asks, by :meth:`outputs`)."""
        return self.loss(model, batch), None

    def batch_sums(self, model: nn.Module, batch: Any) -> dict[str, float]:
        n = batch_size_of(batch)
        return {"loss": float(self.loss(model, batch)) * n, "count": float(n)}

    def summarise(self, totals: dict[str, float]) -> dict[str, float]:
        count = totals.get("count", 0.0)
        return {"loss": totals.get("loss", 0.0) / count, "count": int(count)}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Any], *,
                 max_batches: int | None = None) -> Metrics:
        """``metric_fn``'s result on the capped batches; without it, the mean loss (``loss``,
        ``count``). One pass either way, so a one-shot iterable of batches works too."""
        if self.metric_fn is None:
            return super().evaluate(model, batches, max_batches=max_batches)
        limited = iter(capped(batches, max_batches, owner="Custom"))
        first = next(limited, _NONE)  # NOTE: an empty loader would reach metric_fn as a 0.0 or a 0/0
        if first is _NONE:
            raise no_samples("Custom.evaluate", 0)
        device, modes = device_of(model), modes_of(model)
        model.eval()
        try:
            value = self.metric_fn(model, _moved(itertools.chain([first], limited), device))
        finally:
            restore_modes(modes)
        if isinstance(value, Mapping):
            if self.metric not in value:
                raise DataError(f"Custom: metric_fn returned keys {sorted(value)}; expected "
                                f"'{self.metric}' among them. Fix: return it, or pass metric=<key>.")
            return Metrics({k: _number(k, v) for k, v in value.items()})
        try:
            return Metrics({self.metric: float(value)})
        except (TypeError, ValueError):
            raise DataError(f"Custom: metric_fn must return a number or a dict of numbers; got "
                            f"{type(value).__name__}. Fix: return e.g. a float.") from None

    def __repr__(self) -> str:
        return f"Custom(metric={self.metric!r}, higher_is_better={self.higher_is_better})"


def _number(key: str, value: Any) -> float:
    """A metric dict's value as a float; a list or a vector tensor is a DataError naming ``key``."""
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        got = (f"a tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor)
               else f"a {type(value).__name__}")
        raise DataError(f"Custom: metric_fn returned {got} under '{key}'; expected a number for every key. "
                        f"Fix: return one number per key, e.g. per-class values under keys of their "
                        f"own ('{key}_0', ...).") from None


def _moved(batches: Iterable[Any], device: torch.device) -> Iterator[Any]:
    for batch in batches:
        yield to_device(batch, device)
