"""Where a forward pass spends its time: wall-clock milliseconds per leaf module, by forward hooks.

Used by latency-aware allocation (``PrunerOptions.cost="latency"``) to find the layers whose time
does not fall with their MACs, and useful on its own to see what to prune. The per-module times
are eager PyTorch, measured one call at a time: a pass's time outside any module (a functional
``add`` or ``relu``) is in no entry, so the entries add up to less than the whole forward.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from prunekit.measure.latency import _check, _sync_for
from prunekit.measure.macs import ExampleInput, as_inputs, batch_of

__all__ = ["latency_by_module"]


def _leaves(model: nn.Module) -> dict[str, nn.Module]:
    return {name: module for name, module in model.named_modules() if not next(module.children(), None)}


def latency_by_module(model: nn.Module, example_input: ExampleInput, *, batch_size: int = 1,
                      threads: int = 2, repeats: int = 5) -> dict[str, float]:
    """Median milliseconds of each leaf module's forward (name as in ``named_modules()``), over
    ``repeats`` timed passes after one warm-up, at ``batch_size`` with ``threads`` intra-op threads.

    A module called twice in one pass (a shared ``nn.ReLU``) reports the sum of its calls. The
    model is left as it was (mode, hooks, thread count).
    """
    _check("torch", (batch_size,), threads, 0, repeats, 0.0)  # NOTE: measure_latency's own argument rules
    inputs = batch_of(as_inputs(example_input), batch_size)
    sync = _sync_for(inputs)
    leaves = _leaves(model)
    started: dict[str, float] = {}
    totals: dict[str, float] = {}
    runs: dict[str, list[float]] = {name: [] for name in leaves}

    def before(name: str) -> Callable[..., None]:
        def hook(*_: object) -> None:
            sync()
            started[name] = time.perf_counter()
        return hook

    def after(name: str) -> Callable[..., None]:
        def hook(*_: object) -> None:
            sync()
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - started[name]
        return hook

    handles = [h for name, module in leaves.items()
               for h in (module.register_forward_pre_hook(before(name)), module.register_forward_hook(after(name)))]
    was_training, old_threads = model.training, torch.get_num_threads()
    model.eval()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for run in range(repeats + 1):
                totals.clear()
                model(*inputs)
                if run:  # NOTE: the first pass is the warm-up (allocations, kernel selection).
                    for name in leaves:
                        runs[name].append(totals.get(name, 0.0))
    finally:
        for handle in handles:
            handle.remove()
        torch.set_num_threads(old_threads)
        model.train(was_training)
    return {name: statistics.median(values) * 1000.0 for name, values in runs.items() if any(values)}
