"""Pruning within a metric budget ("less than 1 point lost"): the deepest cut, up to the target, whose
fine-tuned validation metric stays within ``max_metric_drop`` of the dense model's.

A cut is a point ``c`` between nothing cut (0) and the target as given (1): ``macs=0.25`` at
``c=0.5`` keeps 62.5 % of the MACs, ``ratio=0.6`` at ``c=0.5`` removes 30 % of the channels. The
target is tried first, as a plain ``prune`` would; if it loses too much, bisection over ``c`` tries
``tries - 1`` more cuts and keeps the deepest that held. Every try is pruned from the dense model and
fine-tuned with the same budget, so the metric it is judged by is the one it is returned with. The
choice is made on the validation split; the test split only reports.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from torch import nn

from prunekit.errors import ConfigError, DataError
from prunekit.structured import Target
from prunekit.structured.target import in_params

__all__ = ["Attempt", "check_budget", "prune_within", "scaled_target"]


@dataclass
class Attempt:
    """One try: the pruned, fine-tuned model, the fitted pruner, and what ``prune_model`` and the
    fine-tune returned."""

    pruner: Any
    model: nn.Module
    plan: Any
    achieved: dict[str, Any]
    steps: list[dict[str, Any]]
    tuned: Any  # NOTE: the fine-tune's history, None without fine-tuning


def scaled_target(target: Target, cut: float) -> dict[str, Any]:
    """``target`` at ``cut`` of the way from nothing cut (0) to the target itself (1)."""
    if target.kind == "ratio":
        return {"ratio": round(cut * target.value, 9)}
    scaled: dict[str, Any] = {target.kind: round(1.0 - cut * (1.0 - target.value), 9)}
    if target.kind == "latency":
        scaled["batch_size"] = target.batch_size
    return scaled


def check_budget(max_metric_drop: Any, tries: Any) -> None:
    """Refuse a malformed metric budget in one line, before any training or profiling: ``max_metric_drop``
    a number >= 0 (None: no budget), ``tries`` a whole number >= 1. A string ("0.01") or a bool is refused,
    not converted: it reached the comparison as a raw TypeError, after the dense model was profiled."""
    if max_metric_drop is not None and (isinstance(max_metric_drop, bool) or not isinstance(max_metric_drop, Real)
                                        or not float(max_metric_drop) >= 0):
        raise ConfigError(f"max_metric_drop must be >= 0, a number in the metric's units (0.01 is one accuracy "
                          f"point); got {max_metric_drop!r}. Pass e.g. max_metric_drop=0.01.")
    if isinstance(tries, bool) or not isinstance(tries, Integral) or tries < 1:
        raise ConfigError(f"tries must be >= 1, a whole number (the target is the first); got {tries!r}. "
                          f"Pass e.g. tries=5.")


def prune_within(net: nn.Module, target: Target, *, max_metric_drop: float, tries: int,
                 attempt: Callable[[dict[str, Any]], Attempt], score: Callable[[nn.Module], float],
                 higher_is_better: bool, say: Callable[[str], None] | None = None
                 ) -> tuple[Attempt | None, dict[str, Any]]:
    """The deepest of at most ``tries`` cuts of ``net`` towards ``target`` whose ``score`` (the
    validation metric after fine-tuning) is within ``max_metric_drop`` of ``net``'s, with the record
    of every try; None where no cut held (the caller keeps the dense model). A NaN dense metric is a
    DataError: no drop can be measured from it, and every cut would look "over" the budget."""
    check_budget(max_metric_drop, tries)
    target = in_params(target, net)  # NOTE: a size budget is bisected as the params fraction it means
    dense = score(net)
    if math.isnan(dense):
        raise DataError("metric budget: the dense model's validation metric is NaN; expected a number to "
                        "measure each cut's drop from. Fix: check the task's metric on the validation split "
                        "(a metric_fn or loss giving NaN, or NaN inputs), or drop max_metric_drop.")
    best: Attempt | None = None
    record: dict[str, Any] = {"max_metric_drop": max_metric_drop, "dense": dense, "tries": []}
    held, failed = 0.0, 1.0
    for i in range(tries):
        cut = 1.0 if i == 0 else (held + failed) / 2
        asked = scaled_target(target, cut)
        tried = attempt(asked)
        metric = score(tried.model)
        drop = dense - metric if higher_is_better else metric - dense
        within = drop <= max_metric_drop
        record["tries"].append({"cut": cut, "target": asked, "metric": metric, "drop": drop, "within": within,
                                "macs": tried.achieved.get("macs"), "params": tried.achieved.get("params")})
        if say is not None:
            say(f"metric budget: try {i + 1}/{tries} {asked}: {metric:.4g} ({drop:+.4g} lost; "
                f"{'within' if within else 'over'} {max_metric_drop:g})")
        if within:
            best, held, record["chosen"] = tried, cut, i
            if i == 0:
                break
        else:
            failed = cut
    return best, record
