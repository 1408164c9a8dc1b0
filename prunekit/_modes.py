"""Train/eval modes and buffers put back exactly after prunekit's own forward passes.

``model.train(was_training)`` after an eval-mode pass would set every submodule to the model's own
mode, switching one the user had frozen (a BatchNorm kept in eval while the rest trains) into
training. And a forward may write state even in eval mode (a call counter, an exponential average
of activations, a quantisation observer's min/max): tracing, verifying or measuring the user's
model must leave no trace of those passes in it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Modes", "eval_mode", "modes_of", "restore_modes"]


@dataclass
class Modes:
    """Each module's train/eval flag, and its buffers with their values (see :func:`modes_of`)."""

    flags: list[tuple[nn.Module, bool]]
    buffers: list[tuple[nn.Module, dict[str, torch.Tensor | None], list[tuple[torch.Tensor, int, torch.Tensor]]]]



def modes_of(model: nn.Module) -> Modes:
    """Every module's own train/eval flag and buffers, to put back with :func:`restore_modes`."""
    flags = [(module, module.training) for module in model.modules()]
    buffers = []
    with torch.no_grad():
        for module in model.modules():
            own = dict(module._buffers)
            # NOTE: a copy of each (buffers are small next to the weights), restored only where written
            buffers.append((module, own, [(t, version, t.detach().clone()) for t in own.values()
                                          if t is not None and (version := _version(t)) is not None]))
    return Modes(flags, buffers)


def _version(tensor: torch.Tensor) -> int | None:
    """The tensor's count of in-place writes (None for an inference tensor, which keeps none)."""
    try:
        return int(tensor._version)
    except RuntimeError:
        return None


def restore_modes(modes: Modes) -> None:
    """Each module's flag and buffers as :func:`modes_of` found them: a buffer written in place gets
    its values (and shape) back, one the forward rebound, added or removed is put back as it was."""
    for module, training in modes.flags:
        module.training = training
    with torch.no_grad():
        for module, own, values in modes.buffers:
            now = module._buffers
            # NOTE: a TorchScript module's buffers are a read-only view (new objects on every access)
            if isinstance(now, dict) and (now.keys() != own.keys() or any(now[k] is not t for k, t in own.items())):
                now.clear()
                now.update(own)
            for tensor, version, saved in values:
                if _version(tensor) != version:
                    tensor.data = saved  # NOTE: not copy_: an observer resizes its buffers in place


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode within the block; afterwards every module's own flag (and buffer) as it was."""
    modes = modes_of(model)
    model.eval()
    try:
        yield
    finally:
        restore_modes(modes)
