"""Where a forward pass spends its time: wall-clock milliseconds per leaf module, by forward hooks.

Used by latency-aware allocation (``PrunerOptions.cost="latency"``) to find the layers whose time
does not fall with their MACs, and useful on its own to see what to prune. The per-module times
are eager PyTorch, measured one call at a time. With ``functional=True`` the torch functions called
outside every leaf module (a block's residual ``add``, a ``flatten``) are timed too, caught by a
``TorchFunctionMode`` and keyed ``("<add>", i)``; without it, their time is in no entry.
"""

from __future__ import annotations

import statistics
import time
import weakref
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten
from torch.utils.hooks import RemovableHandle

from prunekit._modes import modes_of, restore_modes
from prunekit._checks import positional_inputs
from prunekit.measure.latency import _check, _sync_for
from prunekit.measure.macs import ExampleInput, as_inputs, batch_of

__all__ = ["Call", "input_producers", "latency_by_call", "latency_by_module", "per_module"]

Call = tuple[str, int]  # NOTE: (leaf module name or "<function>", index of the call within one forward pass)


def _leaves(model: nn.Module) -> dict[str, nn.Module]:
    return {name: module for name, module in model.named_modules() if not next(module.children(), None)}


class _OutsideLeaves(TorchFunctionMode):
    """Sees each torch function called while no leaf module runs (the leaves' hooks keep ``depth``)
    and hands it to ``handle(call, func, args, kwargs)``, which calls it; calls inside leaves (a
    Conv2d's ``conv2d``) just run. Call indices count per function name, as leaf calls count per name."""

    def __init__(self, handle: Callable[[Call, Callable[..., Any], tuple, dict], Any]) -> None:
        super().__init__()
        self.handle = handle
        self.depth = 0
        self.calls: dict[str, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if self.depth:
            return func(*args, **kwargs)
        name = f"<{getattr(func, '__name__', type(func).__name__)}>"
        index = self.calls.get(name, 0)
        self.calls[name] = index + 1
        return self.handle((name, index), func, args, kwargs)

    def watch(self, leaves: Iterable[nn.Module]) -> list[RemovableHandle]:
        """Hooks on ``leaves`` that keep ``depth`` (remove them when done)."""
        return [h for module in leaves for h in (module.register_forward_pre_hook(self._enter),
                                                 module.register_forward_hook(self._leave))]

    def _enter(self, *_: object) -> None:
        self.depth += 1

    def _leave(self, *_: object) -> None:
        self.depth -= 1


def latency_by_call(model: nn.Module, example_inputs: ExampleInput, *, batch_size: int = 1,
                    threads: int = 2, repeats: int = 5, functional: bool = False) -> dict[Call, float]:
    """Median milliseconds of each call of each leaf module's forward, keyed ``(name, i)`` for the
    ``i``-th call in a pass (a shared ``nn.ReLU`` has several), over ``repeats`` timed passes after
    one warm-up, at ``batch_size`` with ``threads`` intra-op threads; with ``functional``, also of
    each torch function called outside the leaves, keyed ``("<add_>", i)``. The model is left as it
    was (mode, hooks, thread count)."""
    _check("torch", (batch_size,), threads, 0, repeats, 0.0)  # NOTE: measure_latency's own argument rules
    inputs = batch_of(as_inputs(positional_inputs(model, example_inputs, "latency_by_call")), batch_size)
    sync = _sync_for(inputs)
    leaves = _leaves(model)
    started: dict[str, float] = {}
    calls: dict[str, int] = {}
    runs: dict[Call, list[float]] = {}

    def before(name: str) -> Callable[..., None]:
        def hook(*_: object) -> None:
            sync()
            started[name] = time.perf_counter()
        return hook

    def after(name: str) -> Callable[..., None]:
        def hook(*_: object) -> None:
            sync()
            elapsed = time.perf_counter() - started[name]
            index = calls.get(name, 0)
            calls[name] = index + 1
            runs.setdefault((name, index), []).append(elapsed)
        return hook

    def timed(call: Call, func: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        sync()
        start = time.perf_counter()
        out = func(*args, **kwargs)
        sync()
        runs.setdefault(call, []).append(time.perf_counter() - start)
        return out

    mode = _OutsideLeaves(timed)
    handles = [h for name, module in leaves.items()
               for h in (module.register_forward_pre_hook(before(name)), module.register_forward_hook(after(name)))]
    handles += mode.watch(leaves.values()) if functional else []
    modes, old_threads = modes_of(model), torch.get_num_threads()
    model.eval()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for run in range(repeats + 1):
                calls.clear()
                mode.calls.clear()
                with mode if functional else nullcontext():
                    model(*inputs)
                if not run:  # NOTE: the first pass is the warm-up (allocations, kernel selection).
                    runs.clear()
    finally:
        for handle in handles:
            handle.remove()
        torch.set_num_threads(old_threads)
        restore_modes(modes)
    return {call: statistics.median(values) * 1000.0 for call, values in runs.items()}


def latency_by_module(model: nn.Module, example_inputs: ExampleInput, *, batch_size: int = 1,
                      threads: int = 2, repeats: int = 5) -> dict[str, float]:
    """Median milliseconds of each leaf module's forward (name as in ``named_modules()``, in that
    order), as :func:`latency_by_call` measures it; a module called twice in one pass (a shared
    ``nn.ReLU``) reports the sum of its calls."""
    totals = per_module(latency_by_call(model, example_inputs, batch_size=batch_size, threads=threads,
                                        repeats=repeats))
    return {name: totals[name] for name in _leaves(model) if totals.get(name)}


def per_module(by_call: dict[Call, float]) -> dict[str, float]:
    """Per-call milliseconds summed per module (a shared module's calls added up)."""
    totals: dict[str, float] = {}
    for (name, _), ms in by_call.items():
        totals[name] = totals.get(name, 0.0) + ms
    return totals


def input_producers(model: nn.Module, example_inputs: ExampleInput, *, functional: bool = False) -> dict[Call, str]:
    """Each call of a parameter-free leaf module (``MaxPool2d``, ``ReLU``, ``GELU``...) -> the leaf
    module with parameters or buffers whose output the call's first tensor input is, followed back
    through other parameter-free leaves (keys as in :func:`latency_by_call`). Calls whose input no
    such module produced (the model input, a functional op's new tensor) are absent; an in-place
    ``out += identity`` keeps its left operand's producer. One eval pass on ``example_inputs``; the
    model is left as it was.

    With ``functional``, the torch functions called outside every leaf (keys as in
    :func:`latency_by_call` with ``functional``) are calls too: each maps to the producer of its
    first tensor argument that has one, and passes it on to its outputs, so the ReLU after
    ``relu(out + shortcut)`` reads the block's last BatchNorm, and the ``add`` is charged to it.

    Latency-aware allocation charges a pooling or activation module's time to the channels it
    carries: a ResNet-50's stem max-pool takes about as long as the stem convolution itself.
    """
    leaves = _leaves(model)
    free = {name for name, module in leaves.items()
            if next(module.parameters(), None) is None and next(module.buffers(), None) is None}
    produced: dict[int, tuple[str | None, weakref.ref[torch.Tensor]]] = {}
    calls: dict[str, int] = {}
    source_now: dict[str, str | None] = {}
    found: dict[Call, str] = {}

    def source_of(tensor: object) -> str | None:
        entry = produced.get(id(tensor)) if isinstance(tensor, torch.Tensor) else None
        return entry[0] if entry is not None and entry[1]() is tensor else None  # NOTE: ids of dead tensors are reused

    def before(name: str) -> Callable[..., None]:
        def hook(_: nn.Module, args: tuple[object, ...]) -> None:
            source = source_of(next((a for a in args if isinstance(a, torch.Tensor)), None))
            index = calls.get(name, 0)
            calls[name] = index + 1
            source_now[name] = source
            if source is not None:
                found[(name, index)] = source
        return hook

    def after(name: str) -> Callable[..., None]:
        def hook(_: nn.Module, __: object, output: object) -> None:
            if isinstance(output, torch.Tensor):  # NOTE: a parameter-free leaf passes its input's producer on
                produced[id(output)] = (source_now.get(name) if name in free else name, weakref.ref(output))
        return hook

    def passed_on(call: Call, func: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        out = func(*args, **kwargs)
        source = next((s for s in map(source_of, tree_flatten((args, kwargs))[0]) if s is not None), None)
        if source is not None:
            found[call] = source
            for tensor in tree_flatten(out)[0]:
                if isinstance(tensor, torch.Tensor):
                    produced[id(tensor)] = (source, weakref.ref(tensor))
        return out

    mode = _OutsideLeaves(passed_on)
    handles = [module.register_forward_hook(after(name)) for name, module in leaves.items()]
    handles += [leaves[name].register_forward_pre_hook(before(name)) for name in free]
    handles += mode.watch(leaves.values()) if functional else []
    modes = modes_of(model)
    model.eval()
    try:
        with torch.inference_mode():
            with mode if functional else nullcontext():
                model(*as_inputs(positional_inputs(model, example_inputs, "input_producers")))
    finally:
        for handle in handles:
            handle.remove()
        restore_modes(modes)
    return found
