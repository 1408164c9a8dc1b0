"""Iterative pruning: reach a Target in k steps, re-tracing and re-scoring the smaller model each step.

Schedule: the kept fraction after step ``i`` of ``k`` is ``kept ** (i / k)`` of the dense model
(geometric), where ``kept`` is the target's kept fraction (``1 - ratio`` for a ratio, measured in
prunable channels). An optional fine-tune callback runs between steps, so later scores see a
recovered model. Per-layer overrides (``layer_ratios``/``layer_channels``) act in the first step;
those layers are then held fixed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from torch import nn

from prunekit.graph.dependency import DependencyGraph
from prunekit.graph.groups import channels_removed
from prunekit.measure import count_macs, count_params
from prunekit.structured.plan import Plan
from prunekit.structured.target import Target, in_params, measure

__all__ = ["prune_iteratively", "plan_iteratively", "compose", "schedule"]

FineTune = Callable[[nn.Module, int], nn.Module]


def schedule(kept: float, steps: int) -> list[float]:
    """Kept fraction (of dense) after each of ``steps`` steps: ``kept ** (i / steps)``, i = 1..steps."""
    return [kept ** (i / steps) for i in range(1, steps + 1)]


def _amount(model: nn.Module, example_inputs: Any, target: Target, ignore: Sequence[str],
            freeze: Sequence[str] = ()) -> float:
    """The targeted quantity of ``model`` (prunable channels for a ratio target)."""
    if target.kind in ("macs", "params", "latency"):
        return measure(model, example_inputs, target.kind, batch_size=target.batch_size)
    graph = DependencyGraph.trace(model, example_inputs, ignore=tuple(ignore), freeze=tuple(freeze))
    return float(sum(g.size for g in graph.prunable))


def _step_target(target: Target, relative: float) -> Target:
    """The target for one step, relative to the current model (``relative`` = kept fraction)."""
    relative = min(max(relative, 1e-6), 1.0)
    if target.kind == "ratio":
        return Target(ratio=min(1.0 - relative, 1.0 - 1e-6))
    return Target(**{target.kind: relative, "batch_size": target.batch_size})


def _step_options(options: Mapping[str, Any] | None, step: int) -> dict[str, Any] | None:
    if options is None or step == 0:
        return dict(options) if options is not None else None
    held = {**dict(options.get("layer_ratios", {})), **dict(options.get("layer_channels", {}))}
    return {**options, "layer_ratios": {}, "layer_channels": {m: 0 for m in held}}


def prune_iteratively(model: nn.Module, example_inputs: Any, target: Target | Mapping[str, Any], *,
                      steps: int, importance: str = "l2", scope: str = "local", round_to: int | str = "auto",
                      ignore: Iterable[str] = (), seed: int = 0,
                      options: Mapping[str, Any] | None = None,
                      batches: Callable[[nn.Module], Iterable[Any]] | Iterable[Any] | None = None,
                      finetune: FineTune | None = None,
                      freeze: Iterable[str] = (),
                      loss_fn: Callable[..., Any] | None = None) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Prune ``model`` to ``target`` in ``steps`` steps; returns the final model and one record per step.

    ``model`` is not changed (each step applies its plan to a copy). ``finetune(model, step)`` runs
    between steps and returns the model to continue from. ``batches`` is an iterable of calibration
    batches, or a callable giving them for the current model; ``loss_fn`` the loss of the gradient
    criteria (default: cross-entropy). Each record holds ``step``, ``goal``
    (kept fraction of dense), ``achieved`` (kept fractions of dense: ``macs``, ``params``, and the
    targeted quantity) and ``plan`` (against that step's model).
    """
    from prunekit.config import parse_config
    from prunekit.structured.pruner import PrunerOptions, StructuredPruner

    target = in_params(parse_config(Target, target), model)
    options = parse_config(PrunerOptions, options or {}).model_dump()
    ignore, freeze = list(ignore), list(freeze)
    dense = {"macs": float(count_macs(model, example_inputs)), "params": float(count_params(model)),
             target.kind: _amount(model, example_inputs, target, ignore, freeze)}
    kept = 1.0 - target.value if target.kind == "ratio" else target.value
    current, records = model, []
    for step, goal in enumerate(schedule(kept, steps)):
        relative = goal * dense[target.kind] / _amount(current, example_inputs, target, ignore, freeze)
        pruner = StructuredPruner(_step_target(target, relative), importance=importance, scope=scope,
                                  round_to=round_to, ignore=ignore, freeze=freeze, seed=seed,
                                  options=_step_options(options, step))
        step_batches = batches(current) if callable(batches) else batches
        pruned = pruner.fit_transform(current, example_inputs, step_batches, loss_fn)
        achieved = {"macs": count_macs(pruned, example_inputs) / dense["macs"],
                    "params": count_params(pruned) / dense["params"]}
        if target.kind not in achieved:
            achieved[target.kind] = _amount(pruned, example_inputs, target, ignore, freeze) / dense[target.kind]
        records.append({"step": step, "goal": goal, "achieved": achieved,
                        "plan": pruner.plan_.to_dict(), "step_target": pruner.plan_.meta.get("target")})
        current = pruned
        if finetune is not None and step < steps - 1:
            current = finetune(current, step)
    return current, records


def compose(plans: Sequence[Plan]) -> Plan:
    """One plan against the first model equal to applying ``plans`` one after another.

    Group ids name a group by its first tensor, which pruning does not rename, so later plans'
    indices are looked up in the channels the earlier plans kept.
    """
    first = plans[0]
    keep = {g: tuple(k) for g, k in first.keep.items()}
    for plan in plans[1:]:
        for group_id, kept in plan.keep.items():
            if group_id in keep:
                keep[group_id] = tuple(keep[group_id][i] for i in kept)
    meta = {**first.meta, "steps": len(plans)}
    return Plan(keep=keep, sizes=dict(first.sizes), meta=meta)


def plan_iteratively(model: nn.Module, example_inputs: Any, pruner: Any, graph: DependencyGraph, *,
                     batches: Iterable[Any] | None = None,
                     loss_fn: Callable[..., Any] | None = None) -> tuple[Plan, dict[str, Any]]:
    """``StructuredPruner.fit`` for ``steps > 1`` (no fine-tuning): the composed plan and what it achieves."""
    params = pruner.get_params()
    _, records = prune_iteratively(model, example_inputs, params["target"], steps=params["steps"],
                                   importance=params["importance"], scope=params["scope"],
                                   round_to=params["round_to"], ignore=params["ignore"],
                                   seed=params["seed"], options=params["options"], batches=batches,
                                   freeze=params["freeze"], loss_fn=loss_fn)
    plan = compose([Plan.from_dict(r["plan"]) for r in records])
    unknown = [g for g in plan.keep if g not in {x.id for x in graph.groups}]
    if unknown:
        from prunekit.errors import PrunekitError

        raise PrunekitError(f"Iterative pruning renamed channel groups {unknown[:3]}; the steps cannot "
                            f"be composed into one plan. Use steps=1, or prune_iteratively directly.")
    achieved = {**records[-1]["achieved"], "channels_removed": channels_removed(graph.groups, plan.keep, plan.sizes),
                "steps": len(records)}
    return plan, achieved
