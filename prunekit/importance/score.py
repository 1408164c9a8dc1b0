"""Score every prunable group of a graph with a named importance; the one entry point pruners use."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from prunekit.errors import ConfigError, did_you_mean
from prunekit.graph.dependency import DependencyGraph
from prunekit.importance.reductions import shared_reductions
from prunekit.importance.stats import LossFn, Stats, collect, missing_batches

__all__ = ["score"]
def score(graph: DependencyGraph, model: nn.Module, importance: str = "l2", *,
          batches: Iterable[Any] | None = None, seed: int = 0, stats: Stats | None = None,
          loss_fn: LossFn | None = None, max_batches: int | None = None,
          **options: Any) -> Mapping[str, torch.Tensor]:
    """Group id -> ``Tensor[size]`` scores for every prunable group (higher = keep).

    Args:
        importance: a name from ``prunekit.importance.IMPORTANCE`` (``l1``, ``l2``, ``taylor``, ...).
        batches: calibration batches (tensors or ``(inputs, labels)``), run once through
            :func:`~prunekit.importance.stats.collect` for importance that needs data.
        seed: for seeded importance (``random``, ``lsh``).
        stats: already collected stats, used instead of running ``batches``.
        loss_fn, max_batches: passed to ``collect``.
        options: passed to the importance (``aggregate``, ``normalize``, ``roles``, ...).
    """
    from prunekit.importance import IMPORTANCE

    entry = IMPORTANCE.get(importance)
    needs = tuple(entry.meta.get("needs", ()))
    if needs and stats is None:
        if batches is None:
            raise missing_batches(entry.name)
        stats = collect(model, batches, graph.prunable, needs=needs, loss_fn=loss_fn, max_batches=max_batches)
    if entry.meta.get("seeded", False):
        options = {"seed": seed, **options}
    _check_options(entry.name, entry.factory, options)
    with shared_reductions():
        return {g.id: entry.factory(g, model, stats, **options) for g in graph.prunable}


def _check_options(name: str, fn: Callable[..., Any], options: Mapping[str, Any]) -> None:
    """Unknown options become a ConfigError naming the options the importance does take."""
    params = inspect.signature(fn).parameters
    takes = [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
    for option in options:
        if option not in takes:
            raise ConfigError(
                f"importance '{name}' has no option '{option}'; it takes {', '.join(takes)}."
                f"{did_you_mean(option, takes)} Remove it or check its spelling."
            )
