"""A Hugging Face ``Trainer`` callback driving any prunekit pruner (``step()`` / ``epoch_end()``).

Works with :class:`~prunekit.structured.ScheduledPruner` (structured masks on a schedule) and the
sparsity ``Sparsifier`` (masks with gradual schedules): ``Trainer(..., callbacks=[
PrunekitTrainerCallback(pruner)])``. transformers is needed only when the callback is created.
"""

from __future__ import annotations

from typing import Any

from prunekit.errors import require

__all__ = ["PrunekitTrainerCallback"]


def PrunekitTrainerCallback(pruner: Any) -> Any:  # noqa: N802  (reads as a class at the call site)
    """A ``transformers.TrainerCallback`` calling ``pruner.step()`` after every optimizer step and
    ``pruner.epoch_end(epoch)`` at the end of every epoch (both optional on the pruner)."""
    transformers = require("transformers", feature="the Hugging Face Trainer callback")

    class _Callback(transformers.TrainerCallback):
        def __init__(self) -> None:
            self.pruner = pruner

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            step = getattr(self.pruner, "step", None)
            if step is not None:
                step()
            return control

        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            epoch_end = getattr(self.pruner, "epoch_end", None)
            if epoch_end is not None:
                epoch_end(int(round(state.epoch or 0)) - 1)
            return control

    _Callback.__name__ = _Callback.__qualname__ = "PrunekitTrainerCallback"
    return _Callback()
