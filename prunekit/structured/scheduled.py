"""Structured pruning that changes while the model trains, for any training loop.

During training the model keeps its shape: at each scheduled epoch the pruner re-scores the
channels and zeroes every weight tied to the ones it removes (producer rows, norm scales, consumer
columns), and ``step()`` re-zeroes them after each optimizer step so training cannot revive them.
The ratio can rise and the criterion can change from one entry to the next. ``finalize()`` then
removes the masked channels physically; because their consumers read zeros, the smaller model
computes exactly what the masked one did (the structural engine verifies it).

Plain loop::

    pruner = ScheduledPruner(model, x, schedule=[{"epoch": 0, "ratio": 0.2, "importance": "l1"},
                                                 {"epoch": 2, "ratio": 0.5, "importance": "l2"}])
    for epoch in range(4):
        for batch in loader:
            ...; optimizer.step(); pruner.step()
        pruner.epoch_end(epoch)
    small = pruner.finalize()

It is also a ``prunekit.recover.fit`` callback (``on_step_end``/``on_epoch_end``), and
``prunekit.integrations.PrunekitTrainerCallback`` adapts it to a Hugging Face ``Trainer``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from prunekit.errors import ConfigError
from prunekit.graph.dependency import DependencyGraph
from prunekit.graph.groups import tensor_of
from prunekit.importance.score import score
from prunekit.config import parse_config
from prunekit.structured.allocate import allocate
from prunekit.structured.apply import apply
from prunekit.structured.plan import Plan

__all__ = ["ScheduledPruner", "ScheduleEntry"]


class ScheduleEntry(BaseModel):
    """From the end of ``epoch`` on, ``ratio`` of the channels are removed, ranked by ``importance``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    epoch: int = Field(ge=0, description="epoch at whose end this entry takes effect (from 0)")
    ratio: float = Field(ge=0, lt=1, description="fraction of each group's channels removed")
    importance: str = Field("l2", description="criterion for this entry")


class ScheduledPruner:
    """Masks whole channels on a schedule while training; ``finalize()`` cuts them out.

    Args:
        model: the model being trained (weights are zeroed in place; the shape never changes).
        example_inputs: an input batch for tracing.
        schedule: entries ``{"epoch", "ratio", "importance"}`` (epochs strictly increasing).
        scope, round_to, ignore: as for :func:`~prunekit.structured.allocate`.
        batches: calibration batches for data-driven criteria (taylor, activation, ...).
        seed: for random criteria.
    """

    def __init__(self, model: nn.Module, example_inputs: Any, *,
                 schedule: Sequence[ScheduleEntry | Mapping[str, Any]], scope: str = "local",
                 round_to: int | str = "auto", ignore: Iterable[str] = (), batches: Sequence[Any] | None = None,
                 seed: int = 0) -> None:
        entries = [parse_config(ScheduleEntry, e) for e in schedule]
        if not entries:
            raise ConfigError("ScheduledPruner: the schedule is empty. Pass e.g. "
                              "[{'epoch': 0, 'ratio': 0.3, 'importance': 'l2'}].")
        epochs = [e.epoch for e in entries]
        if epochs != sorted(set(epochs)):
            raise ConfigError(f"ScheduledPruner: schedule epochs must be strictly increasing; got {epochs}.")
        self.model = model
        self.example_inputs = example_inputs
        self.schedule = entries
        self.scope, self.round_to, self.seed = scope, round_to, seed
        self.batches = list(batches) if batches is not None else None
        self.graph = DependencyGraph.trace(model, example_inputs, ignore=tuple(ignore))
        self.plan: Plan | None = None
        self.epochs_done = 0
        self.history: list[dict[str, Any]] = []
        self._zero: list[tuple[torch.Tensor, int, torch.Tensor]] = []

    # -- the schedule -------------------------------------------------------------------------
    def epoch_end(self, epoch: int | None = None) -> Plan | None:
        """Call at the end of each epoch; re-plans and re-masks when an entry is due. Returns the plan."""
        epoch = self.epochs_done if epoch is None else int(epoch)
        self.epochs_done = epoch + 1
        entry = next((e for e in self.schedule if e.epoch == epoch), None)
        if entry is None:
            return None
        scores = score(self.graph, self.model, entry.importance, batches=self.batches, seed=self.seed)
        self.plan = allocate(self.graph, scores, entry.ratio, scope=self.scope, round_to=self.round_to,
                             meta={"criterion": entry.importance, "epoch": epoch})
        self._zero = self._masks(self.plan)
        self.step()
        self.history.append({"epoch": epoch, "ratio": entry.ratio, "importance": entry.importance,
                             "channels_removed": self.plan.ratio})
        return self.plan

    def _masks(self, plan: Plan) -> list[tuple[torch.Tensor, int, torch.Tensor]]:
        zero: list[tuple[torch.Tensor, int, torch.Tensor]] = []
        for group_id in plan.sizes:
            removed = plan.removed(group_id)
            if not removed:
                continue
            channels = torch.tensor(removed, dtype=torch.long)
            for member in self.graph.group(group_id).members:
                tensor = tensor_of(self.model, member.tensor)
                if isinstance(tensor, nn.Parameter):
                    zero.append((tensor, member.axis, member.indices(channels)))
        return zero

    def step(self) -> None:
        """Re-zero the masked channels (call after every ``optimizer.step()``)."""
        with torch.no_grad():
            for tensor, axis, index in self._zero:
                tensor.index_fill_(axis, index.to(tensor.device), 0.0)

    # -- fit callback -------------------------------------------------------------------------
    def on_step_end(self, step: int, model: nn.Module, loss: float) -> None:
        """``fit`` hook: :meth:`step`."""
        self.step()

    def on_epoch_end(self, epoch: int, model: nn.Module, metrics: Mapping[str, Any]) -> None:
        """``fit`` hook: :meth:`epoch_end`."""
        self.epoch_end(epoch)

    def state_dict(self) -> dict[str, Any]:
        """Plan and progress (``fit`` checkpoints it for ``--resume``)."""
        return {"plan": None if self.plan is None else self.plan.to_dict(), "epochs_done": self.epochs_done,
                "history": list(self.history)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.plan = None if state["plan"] is None else Plan.from_dict(state["plan"])
        self.epochs_done = int(state["epochs_done"])
        self.history = list(state["history"])
        self._zero = self._masks(self.plan) if self.plan is not None else []

    # -- the smaller model --------------------------------------------------------------------
    def finalize(self, *, verify_result: bool = True) -> nn.Module:
        """A new model with the masked channels removed (the trained model itself is unchanged)."""
        if self.plan is None:
            raise ConfigError("ScheduledPruner.finalize: no schedule entry has taken effect yet (the first is "
                              f"at the end of epoch {self.schedule[0].epoch}). Call epoch_end() as epochs end.")
        return apply(self.model, self.graph, self.plan, example_inputs=self.example_inputs,
                     verify_result=verify_result)
