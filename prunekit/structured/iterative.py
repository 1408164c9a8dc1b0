"""Iterative pruning: reach a Target in k steps, re-tracing and re-scoring the smaller model each step.

Schedule: the kept fraction after step ``i`` of ``k`` is ``kept ** (i / k)`` of the dense model
(geometric), where ``kept`` is the target's kept fraction. A ``ratio`` target means, as in one step,
that every group loses that fraction: the one-step plan of the dense model fixes each group's final
width, and each step keeps ``size * (width / size) ** (i / k)`` of a group (rounded), so small groups
(attention heads) are cut too and the last step lands on the one-step widths; only which channels
go is re-scored. For the other targets each step meets ``kept ** (i / k)`` of the measured amount,
and per-layer overrides (``layer_ratios``/``layer_channels``) act in the first step; those layers
are then held fixed. An optional fine-tune callback runs between steps, so later scores see a
recovered model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from torch import nn

from prunekit.graph.dependency import DependencyGraph
from prunekit.errors import PrunekitError
from prunekit.graph.groups import channels_removed
from prunekit.measure import count_macs, count_params
from prunekit.structured.allocate import allocate
from prunekit.structured.apply import apply
from prunekit.structured.plan import Plan
from prunekit.structured.target import Target, in_params, measure

__all__ = ["prune_iteratively", "plan_iteratively", "compose", "schedule", "step_widths"]

FineTune = Callable[[nn.Module, int], nn.Module]


def schedule(kept: float, steps: int) -> list[float]:
    """Kept fraction (of dense) after each of ``steps`` steps: ``kept ** (i / steps)``, i = 1..steps."""
    return [kept ** (i / steps) for i in range(1, steps + 1)]


def _amount(model: nn.Module, example_inputs: Any, target: Target) -> float:
    """The targeted quantity of ``model`` (MACs, params or latency; a ratio target pins widths instead)."""
    return measure(model, example_inputs, target.kind, batch_size=target.batch_size)


def _step_target(target: Target, relative: float) -> Target:
    """The target for one step, relative to the current model (``relative`` = kept fraction)."""
    relative = min(max(relative, 1e-6), 1.0)
    return Target(**{target.kind: relative, "batch_size": target.batch_size})


def step_widths(final: Mapping[str, int], sizes: Mapping[str, int], steps: int) -> list[dict[str, int]]:
    """Group id -> kept width of the dense group after each step: ``size * (final / size) ** (i / steps)``,
    rounded, so every group shrinks geometrically and ends at its ``final`` width."""
    return [{g: min(max(round(sizes[g] * (width / sizes[g]) ** (i / steps)), width), sizes[g])
             for g, width in final.items()} for i in range(1, steps + 1)]


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
    targeted quantity; for a ``ratio`` target the fraction every group has lost by then, the target's
    ratio at the last step, and ``channels_removed``), ``plan`` (against that step's model) and
    ``step_target``. A ratio target ends at the one-step plan's widths (see the module docstring).
    """
    from prunekit.config import parse_config
    from prunekit.structured.pruner import PrunerOptions, StructuredPruner

    target = in_params(parse_config(Target, target), model)
    options = parse_config(PrunerOptions, options or {}).model_dump()
    common: dict[str, Any] = {"importance": importance, "scope": scope, "ignore": list(ignore),
                              "freeze": list(freeze), "seed": seed}
    dense = {"macs": float(count_macs(model, example_inputs)), "params": float(count_params(model))}
    if target.kind != "ratio":
        dense[target.kind] = _amount(model, example_inputs, target)
    kept = 1.0 - target.value if target.kind == "ratio" else target.value
    current: nn.Module = model
    records: list[dict[str, Any]] = []
    plans: list[Plan] = []
    one_step: StructuredPruner | None = None
    widths: list[dict[str, int]] = []
    step_target: Any
    for step, goal in enumerate(schedule(kept, steps)):
        step_batches = batches(current) if callable(batches) else batches
        if target.kind == "ratio":
            # NOTE: the first step fits the one-step plan of the dense model, whose widths every step leads to;
            # later steps only score (a ratio of 0 allocates nothing)
            pruner = StructuredPruner(target if one_step is None else Target(ratio=0.0), **common,
                                      round_to=round_to if one_step is None else 1,
                                      options=options if one_step is None else None)
            pruner.fit(current, example_inputs, step_batches, loss_fn)
            if one_step is None:  # NOTE: transform keeps whole, as in one step, a group whose cut fails verification
                one_step = pruner
                pruner.transform(current)
                widths = step_widths({g: len(k) for g, k in pruner.plan_.keep.items()}, pruner.plan_.sizes, steps)
            plan = _pinned_plan(pruner, widths[step], widths[step - 1] if step else one_step.plan_.sizes,
                                one_step.plan_.meta)
            pruned = apply(current, pruner.graph_, plan, example_inputs=pruner.example_inputs_, verify_result=True)
            step_target = {"ratio": 1.0 - goal / (records[-1]["goal"] if records else 1.0)}
        else:
            relative = goal * dense[target.kind] / _amount(current, example_inputs, target)
            pruner = StructuredPruner(_step_target(target, relative), **common, round_to=round_to,
                                      options=_step_options(options, step))
            pruned = pruner.fit_transform(current, example_inputs, step_batches, loss_fn)
            plan, step_target = pruner.plan_, pruner.plan_.meta.get("target")
        plans.append(plan)
        achieved = {"macs": count_macs(pruned, example_inputs) / dense["macs"],
                    "params": count_params(pruned) / dense["params"]}
        if one_step is not None:  # NOTE: a ratio target: what each group has lost by now, and the channels cut
            composed = compose(plans)
            removed = channels_removed(one_step.graph_.groups, composed.keep, composed.sizes)
            achieved.update(ratio=target.value if step == steps - 1 else 1.0 - goal, channels_removed=removed)
        elif target.kind not in achieved:
            achieved[target.kind] = _amount(pruned, example_inputs, target) / dense[target.kind]
        records.append({"step": step, "goal": goal, "achieved": achieved, "plan": plan.to_dict(),
                        "step_target": step_target})
        current = pruned
        if finetune is not None and step < steps - 1:
            current = finetune(current, step)
    return current, records


def _pinned_plan(pruner: Any, widths: Mapping[str, int], before: Mapping[str, int],
                 meta: Mapping[str, Any]) -> Plan:
    """The plan keeping the best ``widths[g]`` channels of each group ``g`` of the fitted ``pruner``'s graph
    that is cut in this step (narrower than ``before``); the others keep every channel."""
    # NOTE: a group already at its width is left out: it may be too small to be a prunable group now
    cut = {g: w for g, w in widths.items() if w < before[g]}
    present = {g.id for g in pruner.graph_.prunable if g.id in pruner.scores_}
    lost = [g for g in cut if g not in present]
    if lost:
        raise PrunekitError(f"Iterative pruning: the channel groups {lost[:3]} of the dense model are not "
                            f"prunable groups of the pruned one, so the steps cannot reach the one-step widths. "
                            f"Use steps=1.")
    plan = allocate(pruner.graph_, pruner.scores_, 0.0, round_to=1, widths=cut)
    return Plan(keep=plan.keep, sizes=plan.sizes, meta=dict(meta))


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
        raise PrunekitError(f"Iterative pruning renamed channel groups {unknown[:3]}; the steps cannot "
                            f"be composed into one plan. Use steps=1, or prune_iteratively directly.")
    achieved = {**records[-1]["achieved"], "channels_removed": channels_removed(graph.groups, plan.keep, plan.sizes),
                "steps": len(records)}
    return plan, achieved
