"""Depth pruning: remove whole residual blocks (replace them by ``nn.Identity``) where it costs least.

A *residual block* is a module computing ``out = x + f(x)`` (maybe followed by a ReLU) with the
shape of ``x``: removing it leaves the identity path, so the model still runs. It is found
without knowing the block's class: the module takes and returns one tensor of the same shape,
holds parameters, and with all its parameters set to zero (``f`` then gives 0) it returns its
input unchanged. Only the innermost such modules are kept: a stage made of residual blocks
passes the test too, and removing it is the same as removing each of its blocks.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from prunekit._modes import modes_of, restore_modes
from prunekit.errors import ConfigError

__all__ = ["residual_blocks", "block_importance", "remove_blocks", "prune_depth", "DepthRecord"]

Metric = Literal["output_change", "loss"]


def _as_tuple(example_inputs: Any) -> tuple[Any, ...]:
    return example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)


def _run(model: nn.Module, inputs: tuple[Any, ...]) -> Any:
    """``model(*inputs)`` in eval mode without gradients; the train/eval mode is restored."""
    modes = modes_of(model)
    model.eval()
    try:
        with torch.no_grad():
            return model(*inputs)
    finally:
        restore_modes(modes)


def _calls(model: nn.Module, inputs: tuple[Any, ...]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Module name -> (input, output) of its first call, for modules called with one tensor."""
    seen: dict[str, tuple[torch.Tensor, torch.Tensor] | None] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
            if name in seen:
                return
            single = len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor)
            same = single and isinstance(out, torch.Tensor) and out.shape == args[0].shape
            # NOTE: cloned, since a later in-place op (ReLU(inplace=True), +=) may change them.
            seen[name] = (args[0].detach().clone(), out.detach().clone()) if same else None
        return record

    handles = [m.register_forward_hook(hook(n), with_kwargs=True)
               for n, m in model.named_modules() if n and any(True for _ in m.parameters())]
    try:
        _run(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
    return {n: v for n, v in seen.items() if v is not None}


def _is_residual(module: nn.Module, x: torch.Tensor, out: torch.Tensor) -> bool:
    """Same shape in and out, and the module is the identity once its parameters are zero."""
    if x.shape != out.shape or x.dtype != out.dtype or not x.is_floating_point():
        return False
    zeros = {n: torch.zeros_like(p) for n, p in module.named_parameters()}
    modes = modes_of(module)
    module.eval()
    try:
        with torch.no_grad():
            got = torch.func.functional_call(module, zeros, (x,))
    except Exception:  # NOTE: a module that cannot run alone is not a removable block.
        return False
    finally:
        restore_modes(modes)
    scale = float(x.abs().max())
    # NOTE: relative tolerance: deep activations of a random-init model can be ~1e-6, and a zeroed
    # layer (output 0) must not pass for the identity on them.
    return (isinstance(got, torch.Tensor) and got.shape == x.shape and scale > 0
            and torch.allclose(got, x, rtol=1e-5, atol=1e-6 * scale))


@contextmanager
def _bypassed(model: nn.Module, names: Iterable[str]) -> Iterator[nn.Module]:
    """``model`` computing as if each named block were ``nn.Identity``, without copying it.

    Forward hooks return each block's input as its output; they are removed on exit.
    """
    handles = [model.get_submodule(n).register_forward_hook(lambda m, args, out: args[0]) for n in names]
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()


def residual_blocks(model: nn.Module, example_inputs: Any) -> list[str]:
    """Names of the innermost residual blocks of ``model`` (see the module docstring), in call order.

    Each is checked by a forward pass of the whole model with it replaced by ``nn.Identity``:
    the model must run and give outputs of the same shapes. ``model`` is not changed.
    """
    inputs = _as_tuple(example_inputs)
    calls = _calls(model, inputs)
    found = [n for n, (x, out) in calls.items() if _is_residual(model.get_submodule(n), x, out)]
    innermost = [n for n in found if not any(o.startswith(n + ".") for o in found)]
    reference = _shapes(_run(model, inputs))
    return [n for n in innermost if _runs_without(model, n, inputs, reference)]


def _shapes(out: Any) -> list[tuple[int, ...]]:
    from torch.utils._pytree import tree_flatten

    return [tuple(t.shape) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]


def _runs_without(model: nn.Module, name: str, inputs: tuple[Any, ...], reference: list[tuple[int, ...]]) -> bool:
    try:
        with _bypassed(model, [name]):
            return _shapes(_run(model, inputs)) == reference
    except Exception:  # NOTE: any failure means this block cannot be removed.
        return False


def remove_blocks(model: nn.Module, names: Iterable[str]) -> nn.Module:
    """A copy of ``model`` with each named block replaced by ``nn.Identity``; ``model`` is untouched."""
    names = list(names)
    known = {n for n, _ in model.named_modules() if n}
    missing = [n for n in names if n not in known]
    if missing:
        raise ConfigError(f"remove_blocks: {type(model).__name__} has no module {missing}. Pass names "
                          f"from residual_blocks(model, example_inputs).")
    pruned = copy.deepcopy(model)
    for name in names:
        pruned.set_submodule(name, nn.Identity())
    return pruned


def _batches(example_inputs: Any, batches: Iterable[Any] | None) -> list[tuple[Any, Any]]:
    """(inputs tuple, target or None) per batch; the example input is one batch without target."""
    if batches is None:
        if example_inputs is None:
            raise ConfigError("block_importance: pass example_inputs or batches (an iterable of "
                              "(x, y) pairs).")
        return [(_as_tuple(example_inputs), None)]
    out = []
    for batch in batches:
        if isinstance(batch, (tuple, list)) and len(batch) == 2:
            out.append(((batch[0],), batch[1]))
        else:
            out.append((_as_tuple(batch), None))
    return out


def block_importance(model: nn.Module, blocks: Sequence[str], *, example_inputs: Any = None,
                     batches: Iterable[Any] | None = None, metric: Metric = "output_change",
                     loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
                     ) -> dict[str, float]:
    """Block name -> how much the model suffers when that block alone becomes ``nn.Identity``.

    Args:
        metric: ``output_change`` is ``||f'(x) - f(x)|| / ||f(x)||`` averaged over the batches
            (no labels needed); ``loss`` is ``loss_fn(f'(x), y) - loss_fn(f(x), y)`` averaged over
            ``(x, y)`` batches (may be negative: removing the block helps).
        batches: calibration batches, ``(x, y)`` pairs (or inputs alone for ``output_change``).
    """
    if metric not in ("output_change", "loss"):
        raise ConfigError(f"block_importance: metric must be 'output_change' or 'loss'; got {metric!r}.")
    data = _batches(example_inputs, batches)
    if metric == "loss" and any(y is None for _, y in data):
        raise ConfigError("block_importance: metric='loss' needs batches of (x, y) pairs with labels; "
                          "pass batches=..., or use metric='output_change'.")
    base = [_run(model, x) for x, _ in data]
    scores = {}
    for name in blocks:
        with _bypassed(model, [name]):
            values = [_change(_run(model, x), ref, y, metric, loss_fn) for (x, y), ref in zip(data, base)]
        scores[name] = sum(values) / len(values)
    return scores


def _change(out: torch.Tensor, ref: torch.Tensor, target: Any, metric: Metric,
            loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> float:
    if metric == "loss":
        return float(loss_fn(out, target) - loss_fn(ref, target))
    return float((out - ref).norm() / ref.norm().clamp_min(1e-12))


@dataclass(frozen=True)
class DepthRecord:
    """What :func:`prune_depth` did: blocks removed (cheapest first), every candidate's score, cost."""

    removed: tuple[str, ...]
    scores: Mapping[str, float]
    metric: str
    macs: tuple[int, int]
    params: tuple[int, int]
    meta: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"removed": list(self.removed), "scores": dict(self.scores), "metric": self.metric,
                "macs": list(self.macs), "params": list(self.params), "meta": dict(self.meta)}


def prune_depth(model: nn.Module, example_inputs: Any, *, n_blocks: int | None = None,
                target: Any = None, batches: Iterable[Any] | None = None,
                metric: Metric = "output_change") -> tuple[nn.Module, DepthRecord]:
    """Remove the least important residual blocks; returns ``(new model, DepthRecord)``.

    Blocks are scored once, each removed alone (:func:`block_importance`), and removed cheapest
    first until ``n_blocks`` are gone or the model's MACs are at most a ``target`` of kind macs
    (``Target(macs=0.8)``: the fraction of the dense MACs of one forward pass of
    ``example_inputs``). ``model`` is not changed.
    """
    from prunekit.measure.macs import macs_by_module

    if (n_blocks is None) == (target is None):
        raise ConfigError("prune_depth: pass exactly one of n_blocks (how many blocks to remove) or "
                          "target (a Target(macs=...) to reach), e.g. n_blocks=2.")
    from prunekit.structured.target import macs_fraction

    # NOTE: a bool is an int to Python (True would remove one block), and 2.5 passed the range check
    # and removed every block: only a whole number is a count of blocks.
    if n_blocks is not None and (isinstance(n_blocks, bool) or not isinstance(n_blocks, numbers.Integral)):
        raise ConfigError(f"prune_depth: n_blocks must be a whole number of blocks to remove; got {n_blocks!r}. "
                          f"Pass an int, e.g. n_blocks=2.")
    n_blocks = None if n_blocks is None else int(n_blocks)
    goal = macs_fraction(target, where="prune_depth", what="blocks are removed", example=0.8)
    blocks = residual_blocks(model, example_inputs)
    if n_blocks is not None and not 0 <= n_blocks <= len(blocks):
        raise ConfigError(f"prune_depth: n_blocks must be in [0, {len(blocks)}] (the removable blocks "
                          f"found); got {n_blocks}.")
    by_module = macs_by_module(model, example_inputs)
    macs_before = by_module.get("", 0)
    target_count = None if goal is None else goal * macs_before
    least = macs_before - sum(by_module.get(n, 0) for n in blocks)
    if target_count is not None and least > target_count:
        # NOTE: checked before scoring: the blocks' MACs alone say it, whatever their order.
        kept = least / max(macs_before, 1)
        if not blocks:
            raise ConfigError(f"prune_depth: Target(macs={goal}) cannot be reached: {type(model).__name__} has no "
                              f"removable residual blocks (see residual_blocks). Cut channels instead "
                              f"(StructuredPruner).")
        raise ConfigError(f"prune_depth: Target(macs={goal}) cannot be reached: removing all {len(blocks)} "
                          f"residual blocks found keeps {kept:.3f} of the dense MACs. Ask for "
                          f"macs >= {math.ceil(kept * 1000) / 1000}, or cut channels too (StructuredPruner).")
    scores = block_importance(model, blocks, example_inputs=example_inputs, batches=batches, metric=metric)
    order = sorted(blocks, key=lambda n: (scores[n], blocks.index(n)))
    removed: list[str] = []
    macs = macs_before
    for name in order:
        if len(removed) == n_blocks or (target_count is not None and macs <= target_count):
            break
        removed.append(name)
        macs -= by_module.get(name, 0)  # NOTE: an Identity does no work; the block's MACs are saved.
    pruned = remove_blocks(model, removed)
    params = (_params(model), _params(pruned))
    record = DepthRecord(tuple(removed), scores, metric, (macs_before, macs), params,
                         {"n_blocks": n_blocks, "target": None if goal is None else {"macs": goal},
                          "candidates": len(blocks)})
    return pruned, record


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
