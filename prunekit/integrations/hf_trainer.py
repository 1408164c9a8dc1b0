"""A Hugging Face ``Trainer`` callback driving any prunekit pruner (``step()`` / ``epoch_end()``).

Works with :class:`~prunekit.structured.ScheduledPruner` (structured masks on a schedule) and the
sparsity ``Sparsifier`` (masks with gradual schedules): ``Trainer(..., callbacks=[
PrunekitTrainerCallback(pruner)])``. transformers is needed only when the callback is created.
``ChannelGates`` is refused: ``prunekit.train`` runs them.

Steps and epochs are the Trainer's own (``state.global_step``, ``state.epoch``), so a run resumed
from a checkpoint continues the schedule where the checkpoint left it, and a partial last epoch
(``max_steps`` ending mid-epoch) is still the epoch it is.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

from prunekit.errors import ConfigError, require

__all__ = ["PrunekitTrainerCallback"]


def PrunekitTrainerCallback(pruner: Any) -> Any:  # noqa: N802  (reads as a class at the call site)
    """A ``transformers.TrainerCallback`` calling ``pruner.step()`` after every optimizer step (with the
    step's index from 0 where ``step`` takes one) and ``pruner.epoch_end(epoch)`` at the end of every
    epoch (from 0; both optional on the pruner).

    The step runs in ``on_optimizer_step``: after ``optimizer.step()`` and before the Trainer's
    ``zero_grad``, so criteria that read gradients (a Sparsifier's ``taylor``/``movement``) see them.
    """
    if hasattr(pruner, "harden"):
        # NOTE: the Trainer's optimizer, gradient clipping and multi-GPU wrappers know nothing of the gates
        raise ConfigError(f"PrunekitTrainerCallback: {type(pruner).__name__} cannot run in a Hugging Face Trainer "
                          f"(its gates train outside the Trainer's optimizer, in one process only). Train them with "
                          f"prunekit.train(model, data, config, callbacks=[gates]) or a recipe's gates stage, then "
                          f"call gates.harden().")
    transformers = require("transformers", feature="the Hugging Face Trainer callback")
    # NOTE: transformers < 4.42 has no on_optimizer_step; there the step falls back to on_step_end,
    # after zero_grad, which a pruner reading gradients cannot use.
    base: Any = transformers.TrainerCallback
    hooked = hasattr(base, "on_optimizer_step")
    if not hooked and getattr(pruner, "needs_gradients_", False):
        raise ConfigError(f"PrunekitTrainerCallback: {type(pruner).__name__} reads gradients at each step, but "
                          f"transformers {transformers.__version__} clears them before any callback runs. "
                          f"Upgrade with: pip install 'transformers>=4.42'.")

    class _Callback(base):
        def __init__(self) -> None:
            self.pruner = pruner
            self._stepped = False  # whether on_optimizer_step stepped the pruner for this step

        def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            # NOTE: global_step is raised only after this hook: it is the index of the step just taken.
            self._stepped = _step(self.pruner, state.global_step)
            return control

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if not self._stepped:  # NOTE: no on_optimizer_step (older transformers)
                _step(self.pruner, max(state.global_step - 1, 0))
            self._stepped = False
            return control

        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            epoch_end = getattr(self.pruner, "epoch_end", None)
            epoch = _ended_epoch(state.epoch)
            if epoch_end is not None and epoch is not None:
                epoch_end(epoch)
            return control

    _Callback.__name__ = _Callback.__qualname__ = "PrunekitTrainerCallback"
    return _Callback()


def _ended_epoch(progress: float | None) -> int | None:
    """The index (from 0) of the epoch ending at the Trainer's ``state.epoch`` = ``progress``; None
    before any step.

    The Trainer sets ``state.epoch = epoch + (step + 1) / steps_in_epoch`` after each optimizer step,
    so an epoch ``e`` ends at a value in ``(e, e + 1]``: ``e + 1`` when it ran whole, less when
    ``max_steps`` stopped it early. Rounding instead would give a half-run epoch 2 (2.5) the
    number of epoch 1, or a quarter-run epoch 0 (0.25) the number -1.
    """
    if not progress or progress <= 0:
        return None
    return math.ceil(progress) - 1


def _step(pruner: Any, index: int) -> bool:
    """``pruner.step(index)``, or ``pruner.step()`` where it takes no step; False without ``step``."""
    step: Callable[..., Any] | None = getattr(pruner, "step", None)
    if step is None:
        return False
    if _takes_argument(step):
        step(index)
    else:
        step()
    return True


def _takes_argument(function: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # NOTE: a builtin without a signature
        return False
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in parameters)
