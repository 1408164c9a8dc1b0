"""Structured pruning that changes while the model trains, for any training loop.

During training the model keeps its shape: at each scheduled epoch the pruner re-scores the
channels and zeroes every weight tied to the ones it removes (producer rows, norm scales, consumer
columns), and ``step()`` re-zeroes them after each optimizer step so training cannot revive them.
The ratio can rise and the importance can change from one entry to the next. ``finalize()`` then
removes the masked channels physically; because their consumers read zeros, the smaller model
computes what the masked one did, exactly where no layer mixes the cut channels with the kept ones
(the structural engine verifies it). A norm over a cut width is the exception: while training, its
statistics (LayerNorm's mean and variance, RMSNorm's mean square, GroupNorm's per group) count the
masked channels' zeros, and once they are cut they do not. With a fraction ``r`` of a norm's width
cut (a transformer's hidden width), the masked model's norm outputs are about ``1/sqrt(1 - r)`` times
the smaller model's (for RMSNorm exactly, up to its eps; 1.41 at ``r = 0.5``; LayerNorm's mean shifts
too), so the outputs differ and the smaller model needs fine-tuning. ``finalize`` measures the
difference on the example inputs (``output_difference_``) and warns when it is more than rounding.

Plain loop::

    pruner = ScheduledPruner([{"epoch": 0, "ratio": 0.2, "importance": "l1"},
                              {"epoch": 2, "ratio": 0.5, "importance": "l2"}]).fit(model, x)
    for epoch in range(4):
        for batch in loader:
            ...; optimizer.step(); pruner.step()
        pruner.epoch_end(epoch)
    small = pruner.finalize()

``__init__`` only stores the arguments; ``fit(model, example_inputs)`` checks them and traces the
model (``model_``, ``graph_``); ``plan_``, ``epochs_done_`` and ``history_`` follow the schedule,
``output_difference_`` is what ``finalize`` measured.
It is also a training-loop callback (``on_step_end``/``on_epoch_end``), and
``prunekit.integrations.PrunekitTrainerCallback`` adapts it to a Hugging Face ``Trainer``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from prunekit._checks import check_entry, positional_inputs, tensors_in
from prunekit._modes import modes_of, restore_modes
from prunekit.errors import ConfigError, NotFittedError
from prunekit.graph.dependency import DependencyGraph
from prunekit.graph.groups import channels_removed, tensor_of
from prunekit.importance.score import score
from prunekit.importance.stats import ModelInputs
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
    importance: str = Field("l2", description="how channels are scored for this entry")


class ScheduledPruner:
    """Masks whole channels on a schedule while training; ``finalize()`` cuts them out.

    Args:
        schedule: entries ``{"epoch", "ratio", "importance"}`` (epochs strictly increasing).
        scope, round_to, ignore: as for :func:`~prunekit.structured.allocate`.
        seed: for random importance.

    :meth:`fit` traces the model; the weights are then zeroed in place as the schedule says (the
    shape never changes until :meth:`finalize`).
    """

    def __init__(self, schedule: Sequence[ScheduleEntry | Mapping[str, Any]], *, scope: str = "local",
                 round_to: int | str = "auto", ignore: Iterable[str] = (), seed: int = 0) -> None:
        self.schedule = schedule
        self.scope, self.round_to, self.ignore, self.seed = scope, round_to, ignore, seed

    def validate_params(self) -> list[ScheduleEntry]:
        """The schedule's entries, checked (``fit`` calls this first)."""
        entries = [parse_config(ScheduleEntry, e) for e in self.schedule]
        if not entries:
            raise ConfigError("ScheduledPruner: the schedule is empty. Pass e.g. "
                              "[{'epoch': 0, 'ratio': 0.3, 'importance': 'l2'}].")
        epochs = [e.epoch for e in entries]
        if epochs != sorted(set(epochs)):
            raise ConfigError(f"ScheduledPruner: schedule epochs must be strictly increasing; got {epochs}.")
        return entries

    def fit(self, model: nn.Module, example_inputs: Any, batches: Sequence[Any] | None = None) -> ScheduledPruner:
        """Trace ``model`` (the one being trained; its weights are zeroed in place from now on).

        ``example_inputs``: a tensor, a tuple of positional inputs, or a dict keyed by ``forward``'s
        parameter names (a tokenizer's output). ``batches``: calibration batches for data-driven
        importance (taylor, activation, ...), as :func:`~prunekit.importance.collect` takes them; a
        dict batch (``{"input_ids": ..., "attention_mask": ...}``) runs as ``model(**batch)``.
        """
        self.entries_ = self.validate_params()
        check_entry(model, example_inputs, "ScheduledPruner.fit")
        # NOTE: as StructuredPruner does: verification and finalize() pass example inputs positionally
        example_inputs = positional_inputs(model, example_inputs, "ScheduledPruner.fit")
        self.batches_ = _calibration(self.entries_, batches)
        self.graph_ = DependencyGraph.trace(model, example_inputs, ignore=tuple(self.ignore))
        self.model_, self.example_inputs_ = model, example_inputs
        self.plan_: Plan | None = None
        self.epochs_done_ = 0
        self.history_: list[dict[str, Any]] = []
        self._zero: list[tuple[torch.Tensor, int, torch.Tensor]] = []
        self.output_difference_: float | None = None  # NOTE: measured by finalize
        return self

    def __getattr__(self, name: str) -> Any:
        # NOTE: only reached for missing attributes; learned ones get the "not fitted" message.
        if name.endswith("_") and not name.startswith("_"):
            raise NotFittedError(f"ScheduledPruner: '{name}' is not set because this pruner is not fitted "
                                 f"yet. Call pruner.fit(model, example_inputs) before training.")
        raise AttributeError(name)

    # -- the schedule -------------------------------------------------------------------------
    def epoch_end(self, epoch: int | None = None) -> Plan | None:
        """Call at the end of each epoch; re-plans and re-masks when an entry is due. Returns the plan."""
        epoch = self.epochs_done_ if epoch is None else int(epoch)
        self.epochs_done_ = epoch + 1
        entry = next((e for e in self.entries_ if e.epoch == epoch), None)
        if entry is None:
            return None
        scores = score(self.graph_, self.model_, entry.importance, batches=self.batches_, seed=self.seed)
        self.plan_ = allocate(self.graph_, scores, entry.ratio, scope=self.scope, round_to=self.round_to,
                              meta={"importance": entry.importance, "epoch": epoch})
        self._zero = self._masks(self.plan_)
        self.step()
        self.history_.append({"epoch": epoch, "ratio": entry.ratio, "importance": entry.importance,
                              "channels_removed": channels_removed(self.graph_.groups, self.plan_.keep,
                                                                   self.plan_.sizes)})
        return self.plan_

    def _masks(self, plan: Plan) -> list[tuple[torch.Tensor, int, torch.Tensor]]:
        zero: list[tuple[torch.Tensor, int, torch.Tensor]] = []
        for group_id in plan.sizes:
            removed = plan.removed(group_id)
            if not removed:
                continue
            channels = torch.tensor(removed, dtype=torch.long)
            for member in self.graph_.group(group_id).members:
                tensor = tensor_of(self.model_, member.tensor)
                if isinstance(tensor, nn.Parameter):
                    zero.append((tensor, member.axis, member.indices(channels)))
        return zero

    def step(self) -> None:
        """Re-zero the masked channels (call after every ``optimizer.step()``)."""
        if not hasattr(self, "_zero"):
            raise NotFittedError("ScheduledPruner: call fit(model, example_inputs) before step().")
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
        return {"plan": None if self.plan_ is None else self.plan_.to_dict(), "epochs_done": self.epochs_done_,
                "history": list(self.history_)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (onto a pruner fitted on the same model)."""
        self.plan_ = None if state["plan"] is None else Plan.from_dict(state["plan"])
        self.epochs_done_ = int(state["epochs_done"])
        self.history_ = list(state["history"])
        self._zero = self._masks(self.plan_) if self.plan_ is not None else []

    # -- the smaller model --------------------------------------------------------------------
    def finalize(self, *, verify_result: bool = True) -> nn.Module:
        """A new model with the masked channels removed (the trained model itself is unchanged).

        With ``verify_result``, ``output_difference_`` is the largest difference between the masked
        model's outputs and the new model's on the example inputs (None without), with a warning when it
        is more than rounding: a norm over a cut width (see the module docstring) makes them differ.
        """
        if self.plan_ is None:
            raise ConfigError("ScheduledPruner.finalize: no schedule entry has taken effect yet (the first is "
                              f"at the end of epoch {self.entries_[0].epoch}). Call epoch_end() as epochs end.")
        small = apply(self.model_, self.graph_, self.plan_, example_inputs=self.example_inputs_,
                      verify_result=verify_result)
        self.output_difference_ = None
        if verify_result:
            self.output_difference_, largest = _largest_difference(self.model_, small, self.example_inputs_)
            if self.output_difference_ > _ROUNDING * max(largest, 1.0):
                warnings.warn(f"ScheduledPruner.finalize: the smaller model's outputs differ from the masked "
                              f"model's by up to {self.output_difference_:.3g} (outputs up to {largest:.3g}) on the "
                              f"example inputs: a norm over a cut width (LayerNorm, RMSNorm, GroupNorm) counted the "
                              f"masked zeros in its statistics. Fine-tune the smaller model before using it.",
                              stacklevel=2)
        return small


# NOTE: float32 sums over fewer channels round differently; more than this is a real difference
_ROUNDING = 1e-4


def _calibration(entries: Sequence[ScheduleEntry], batches: Iterable[Any] | None) -> list[Any] | None:
    """The calibration batches as ``collect`` takes them (a dict batch as :class:`ModelInputs`), checked
    now against the entries that need data, rather than when the first of them takes effect."""
    from prunekit.importance import IMPORTANCE

    taken = None if batches is None else [ModelInputs(keywords=b) if isinstance(b, Mapping) else b for b in batches]
    for entry in entries:
        needs = tuple(IMPORTANCE.get(entry.importance).meta.get("needs", ()))
        if not needs:
            continue
        if not taken:
            raise ConfigError(f"ScheduledPruner: the entry at epoch {entry.epoch} ranks by '{entry.importance}', which "
                              f"needs calibration data; got {'no' if taken is None else 'an empty list of'} batches. "
                              f"Pass fit(model, example_inputs, batches=[(inputs, labels), ...]).")
        odd = next((b for b in taken if not isinstance(b, (torch.Tensor, ModelInputs))
                    and not (isinstance(b, (tuple, list)) and b)), None)
        if odd is not None:
            raise ConfigError(f"ScheduledPruner: a calibration batch is a {type(odd).__name__}; expected a tensor, an "
                              f"(inputs, labels) tuple or a dict of the model's inputs. Pass batches of those.")
        if "gradients" in needs and any(isinstance(b, ModelInputs) for b in taken):
            raise ConfigError(f"ScheduledPruner: '{entry.importance}' (epoch {entry.epoch}) needs a loss, hence "
                              f"labels, but the calibration batches are model inputs alone (dicts). Pass (inputs, "
                              f"labels) tuples, e.g. [(b['input_ids'], b['labels']) for b in batches], or rank by "
                              f"'activation'.")
    return taken


def _largest_difference(masked: nn.Module, small: nn.Module, example_inputs: Any) -> tuple[float, float]:
    """The largest absolute difference between two models' outputs in eval mode, and the largest
    absolute output of ``masked`` (the scale the difference is judged against)."""
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    modes = [modes_of(masked), modes_of(small)]
    try:
        with torch.no_grad():
            want = tensors_in(masked.eval()(*inputs), "the masked model's output")
            got = tensors_in(small.eval()(*inputs), "the smaller model's output")
    finally:
        for saved in modes:
            restore_modes(saved)
    pairs = [(g.double(), w.double()) for g, w in zip(got, want)
             if g.shape == w.shape and g.is_floating_point() and g.numel()]
    difference = max((float((g - w).abs().max()) for g, w in pairs), default=0.0)
    return difference, max((float(w.abs().max()) for _, w in pairs), default=0.0)
