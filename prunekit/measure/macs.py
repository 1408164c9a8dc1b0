"""Multiply-accumulates of one forward pass, counted by PyTorch's own FLOP counter.

MACs = FLOPs / 2 as ``torch.utils.flop_counter.FlopCounterMode`` counts them: matmuls,
convolutions and attention; element-wise ops (activations, norms, pooling) count zero.
This module also holds the small helpers that turn an example input into a batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from prunekit.errors import ConfigError

__all__ = ["count_macs", "macs_by_module", "as_inputs", "batch_of", "counting_mode"]

ExampleInput = torch.Tensor | tuple[torch.Tensor, ...]


def as_inputs(example_inputs: ExampleInput) -> tuple[torch.Tensor, ...]:
    """The example input as a tuple of tensors (the positional arguments of ``forward``)."""
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    bad = [type(x).__name__ for x in inputs if not isinstance(x, torch.Tensor)]
    if not inputs or bad:
        raise ConfigError(
            f"example_inputs must be a tensor or a non-empty tuple of tensors; got "
            f"{type(example_inputs).__name__}{f' holding {bad}' if bad else ''}. Pass e.g. "
            f"torch.randn(1, 3, 224, 224), or (ids, mask) for a model with two inputs.")
    return inputs


def batch_of(inputs: tuple[torch.Tensor, ...], batch_size: int) -> tuple[torch.Tensor, ...]:
    """Each input tiled (repeated) along dim 0, then cut to exactly ``batch_size`` rows.

    0-d tensors have no batch dimension and are passed through unchanged.
    """
    out = []
    for x in inputs:
        if x.dim() == 0:
            out.append(x)
            continue
        times = -(-batch_size // max(x.shape[0], 1))
        out.append(x.repeat(times, *([1] * (x.dim() - 1)))[:batch_size].contiguous())
    return tuple(out)


@contextmanager
def counting_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode, no grad, and attention run as plain matmuls, so the counter sees every MAC."""
    # NOTE: nn.MultiheadAttention / TransformerEncoderLayer take a fused "fast path" in eval under
    # no_grad, and CPU SDPA dispatches to a fused kernel; FlopCounterMode has no formula for
    # either and would count 0 for them (a tiny ViT came out 43% low, nn.TransformerEncoder at 0).
    from torch.nn.attention import SDPBackend, sdpa_kernel

    was_training, fastpath = model.training, torch.backends.mha.get_fastpath_enabled()
    model.eval()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        model.train(was_training)


def _flop_counts(model: nn.Module, example_inputs: ExampleInput) -> dict[str, dict[object, int]]:
    inputs = as_inputs(example_inputs)
    with counting_mode(model), FlopCounterMode(display=False, depth=None) as counter:
        model(*inputs)
    return counter.get_flop_counts()


def count_macs(model: nn.Module, example_inputs: ExampleInput) -> int:
    """MACs of one forward pass on ``example_inputs`` (the whole batch it holds).

    The model runs once in eval mode under ``no_grad``; its train/eval mode is restored.
    """
    counts = _flop_counts(model, example_inputs)
    return sum(counts.get("Global", {}).values()) // 2


def macs_by_module(model: nn.Module, example_inputs: ExampleInput) -> dict[str, int]:
    """MACs per module, keyed by qualified name as in ``named_modules()`` ("" is the whole model).

    A parent's count includes its children's. Modules that do no counted work are left out;
    the order is ``named_modules()`` order, so the dict reads as the model's outline.
    """
    counts = _flop_counts(model, example_inputs)
    root = type(model).__name__
    by_name: dict[str, int] = {}
    for key, ops in counts.items():
        if key == "Global":
            continue
        name = "" if key == root else key.removeprefix(root + ".")
        by_name[name] = sum(ops.values()) // 2
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return dict(sorted(by_name.items(), key=lambda item: order.get(item[0], len(order))))
