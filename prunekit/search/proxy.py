"""The proxy metric: how good a candidate model is, cheaply, without fine-tuning it for real.

The proxy is the task metric on a fixed validation subset after re-estimating BatchNorm statistics
on a few training batches (reset running stats, cumulative average with ``momentum=None``, forward
in train mode without gradients). Removing channels shifts every later layer's activation
statistics; re-estimating them recovers most of the accuracy a pruned model has before fine-tuning
(the observation behind EagleEye, Li et al. 2020), so candidates rank close to how they rank after
fine-tuning. ``finetune_steps`` adds a few SGD steps on a copy first, for a closer estimate.

A model passed in is never left changed: the BatchNorm buffers, momenta and train/eval modes are
restored after scoring; fine-tuning works on a copy.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["Proxy", "reestimated_bn", "batchnorms"]


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``model`` that tracks running statistics."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@contextmanager
def reestimated_bn(model: nn.Module, batches: Sequence[Any], task: Any) -> Iterator[nn.Module]:
    """``model`` in eval mode with BatchNorm statistics re-estimated on ``batches``; on exit the
    statistics, momenta and every module's train/eval mode are exactly as they were."""
    layers = batchnorms(model)
    saved = [(bn.momentum, bn.running_mean.clone(), bn.running_var.clone(),  # type: ignore[union-attr]
              bn.num_batches_tracked.clone()) for bn in layers]  # type: ignore[union-attr]
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        if layers and batches:
            for bn in layers:
                bn.reset_running_stats()
                bn.momentum = None  # NOTE: a cumulative average, so every batch counts alike
                bn.train()
            with torch.no_grad():
                for batch in batches:
                    task.outputs(model, batch)
            for bn in layers:
                bn.eval()
        yield model
    finally:
        with torch.no_grad():
            for bn, (momentum, mean, var, count) in zip(layers, saved):
                bn.momentum = momentum
                bn.running_mean.copy_(mean)  # type: ignore[union-attr]
                bn.running_var.copy_(var)  # type: ignore[union-attr]
                bn.num_batches_tracked.copy_(count)  # type: ignore[union-attr]
        for module, training in modes:
            module.training = training


@dataclass
class Proxy:
    """Scores a model by ``task``'s metric on ``validation`` after BatchNorm re-estimation.

    Args:
        task: a :class:`~prunekit.tasks.Task` (classification: accuracy).
        calibration: training batches; the first ``bn_batches`` re-estimate BatchNorm statistics,
            and fine-tuning cycles through all of them.
        validation: the fixed batches the metric is computed on.
        bn_batches: how many calibration batches re-estimate BatchNorm.
        finetune_steps: SGD steps on a copy before scoring (0: none).
        lr: learning rate of those steps (SGD, momentum 0.9).
        metric: which of the task's metrics (None: ``task.metric``).
    """

    task: Any
    calibration: Sequence[Any]
    validation: Sequence[Any]
    bn_batches: int = 2
    finetune_steps: int = 0
    lr: float = 0.01
    metric: str | None = None

    @property
    def metric_name(self) -> str:
        return self.metric or str(getattr(self.task, "metric", "accuracy"))

    @property
    def higher_is_better(self) -> bool:
        return bool(getattr(self.task, "higher_is_better", True))

    def __call__(self, model: nn.Module, *, finetune_steps: int | None = None) -> float:
        """The proxy metric of ``model`` (unchanged on return)."""
        steps = self.finetune_steps if finetune_steps is None else finetune_steps
        if steps > 0:
            model = self._tuned(model, steps)
        with reestimated_bn(model, list(self.calibration[:self.bn_batches]), self.task) as ready:
            metrics = self.task.evaluate(ready, self.validation)
        return float(metrics[self.metric_name])

    def _tuned(self, model: nn.Module, steps: int) -> nn.Module:
        tuned = copy.deepcopy(model)
        tuned.train()
        optimizer = torch.optim.SGD(tuned.parameters(), lr=self.lr, momentum=0.9)
        for batch in itertools.islice(itertools.cycle(self.calibration), steps):
            optimizer.zero_grad(set_to_none=True)
            self.task.loss(tuned, batch).backward()
            optimizer.step()
        return tuned
