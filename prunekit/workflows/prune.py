"""The ``prune`` workflow: baseline, profile, structured pruning to a target, fine-tune, profile, save.

:func:`prune_model` is the step a recipe's ``prune`` stage shares with the command: a
:class:`~prunekit.structured.StructuredPruner` applied in one step, or in several with fine-tuning
between them, then fine-tuned after the last.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from prunekit.errors import ConfigError, did_you_mean
from prunekit.graph import DependencyGraph
from prunekit.graph.groups import channels_removed
from prunekit.recover import TrainConfig
from prunekit.structured import (
    Plan,
    StructuredPruner,
    allocate,
    compose,
    prune_iteratively,
)
from prunekit.structured.target import KINDS
from prunekit.workflows.common import (
    reusing_exports,
    compare_models,
    architecture_of,
    Data,
    Measure,
    Model,
    build,
    calibration_batches,
    capped_splits,
    eval_data,
    example_of,
    check_device,
    evidence_of,
    finish_with_report,
    dense_of,
    measure_profile,
    name_of,
    save_result,
    staged,
    selection_data,
    spec_of,
    starts_trained,
    task_of,
    torch_scorer,
    with_teacher,
)
from prunekit.workflows.metric_budget import Attempt, check_budget, prune_within
from prunekit.workflows.inputs import check_labels
from prunekit.workflows.train import fine_tune, history, train_baseline, with_epochs

__all__ = ["check_fits", "check_stage", "precheck", "prune", "prune_model", "STAGE_KEYS"]

Tuner = Callable[[nn.Module], Any]


def prune_model(net: nn.Module, splits: Any, pruner: StructuredPruner, *, finetune_epochs: int,
                tune: Tuner | None = None, task: Any = None
                ) -> tuple[nn.Module, Plan, dict[str, Any], list[dict[str, Any]], Any]:
    """Prune ``net`` with ``pruner``; with ``finetune_epochs > 0`` call ``tune(model)`` between the
    steps (``pruner.steps > 1``) and after the last one, as ``prunekit prune --finetune-epochs`` does.
    Returns ``(pruned model, plan against net, achieved, steps, the last tune's result or None)``."""
    task = task_of(splits, task)
    example, batches = example_of(splits, task), calibration_batches(splits, 4, task=task)
    if pruner.steps > 1 and finetune_epochs > 0 and tune is not None:
        pruned, plan, achieved, steps = _prune_in_steps(net, example, batches, pruner, tune)
    else:
        pruned = pruner.fit_transform(net, example, batches)
        plan, achieved, steps = pruner.plan_, dict(pruner.achieved_), []
    tuned = tune(pruned) if finetune_epochs > 0 and tune is not None else None
    return pruned, plan, achieved, steps, tuned


def _prune_in_steps(net: nn.Module, example: Any, batches: Any, pruner: StructuredPruner, tune: Tuner
                    ) -> tuple[nn.Module, Plan, dict[str, Any], list[dict[str, Any]]]:
    """``pruner``'s target in ``pruner.steps`` steps with ``tune(model)`` between them: the pruned
    model, one plan against ``net``, what was achieved and a record per step."""
    params = pruner.get_params()

    def between(model: nn.Module, step: int) -> nn.Module:
        tune(model)
        return model

    params.pop("steps")
    pruned, records = prune_iteratively(net, example, params.pop("target"), steps=pruner.steps,
                                        **params, batches=batches, finetune=between)
    plan = compose([Plan.from_dict(r["plan"]) for r in records])
    steps = [{k: r[k] for k in ("step", "goal", "achieved")} for r in records]
    removed = channels_removed(DependencyGraph.trace(net, example).groups, plan.keep, plan.sizes)
    return pruned, plan, {**records[-1]["achieved"], "channels_removed": removed}, steps


def check_fits(importance: Any, splits: Any, task: Any) -> None:
    """Refuse, before any training, an importance scored by gradients of a labelled loss (taylor)
    on data without labels."""
    from prunekit.importance import IMPORTANCE

    needs = isinstance(importance, str) and importance in IMPORTANCE \
        and "gradients" in IMPORTANCE.get(importance).meta.get("needs", ())
    check_labels("prune", str(importance), needs, splits, task,
                 "Use a data-free importance (l2, l1, fpgm) or one from activations (activation, apoz).")


# NOTE: the seed is the run's (train_config.seed), passed to the pruner beside the stage
STAGE_KEYS = tuple(k for k in inspect.signature(StructuredPruner).parameters if k != "seed")
_TARGET_KEYS = (*KINDS, "batch_size")


def check_stage(stage: Any) -> None:
    """Refuse, before any data is loaded, a ``stage`` that is not a mapping of :data:`STAGE_KEYS` with a
    ``target``: a target's own key at the top (``{"macs": 0.5}``) is shown nested where it belongs."""
    example = "stage={'target': {'macs': 0.5}}"
    if not isinstance(stage, Mapping):
        raise ConfigError(f"prune: 'stage' must be a mapping of StructuredPruner's arguments; got "
                          f"{type(stage).__name__}. Pass e.g. {example}.")
    unknown = [k for k in stage if k not in STAGE_KEYS]
    if unknown:
        budget = {k: stage[k] for k in unknown if k in _TARGET_KEYS}
        if budget:
            given = stage.get("target")
            nested = {"target": {**(dict(given) if isinstance(given, Mapping) else {}), **budget},
                      **{k: v for k, v in stage.items() if k not in budget and k != "target"}}
            hint = f" {', '.join(budget)} belong{'s' if len(budget) == 1 else ''} in the target: pass stage={nested!r}."
        elif "seed" in unknown:
            hint = " The seed is the run's: pass train_config=TrainConfig(seed=...)."
        else:
            hint = did_you_mean(str(unknown[0]), STAGE_KEYS)
        raise ConfigError(f"prune: stage has unknown keys {unknown}; it takes {', '.join(STAGE_KEYS)}.{hint}")
    if "target" not in stage:
        raise ConfigError(f"prune: stage has no 'target' (how small the pruned model must be). Pass e.g. {example}.")


def precheck(net: nn.Module, example: Any, pruner: StructuredPruner) -> None:
    """Fail on a misspelt layer name before the baseline is trained, not after."""
    graph = DependencyGraph.trace(net, example, ignore=tuple(pruner.ignore or ()))
    allocate(graph, {}, 0.0, **{k: v for k, v in pruner.allocate_kwargs().items() if k != "meta"})


@reusing_exports
def prune(model: Model, data: Data = "fashion_mnist", *, stage: Mapping[str, Any],
          weights: str | None = None, baseline_epochs: int = 1, finetune_epochs: int = 1,
          train_config: TrainConfig | None = None, data_dir: str | None = None, tokenizer: str | None = None,
          block_size: int | None = None, image_size: int | tuple[int, int] | None = None,
          out_dir: str | os.PathLike[str] | None = None, progress: bool = False,
          measure: Measure | None = None, device: str | torch.device | None = None,
          task: str | None = None, max_metric_drop: float | None = None, tries: int = 5) -> dict[str, Any]:
    """Baseline (or ``weights``), profile, prune, fine-tune, profile again, save.

    ``stage`` holds the :class:`~prunekit.structured.StructuredPruner` arguments, the keys of a
    recipe's ``prune`` stage: ``target`` (a :class:`~prunekit.structured.Target` mapping: ``ratio``
    removed, or ``macs``/``params``/``latency`` kept), ``importance``, ``scope``, ``round_to``,
    ``ignore``, ``steps``, ``options``. Trains ``baseline_epochs`` when no ``weights`` are given
    and fine-tunes ``finetune_epochs`` with ``train_config`` (default Adam, lr 1e-3) on ``device``.
    ``task`` says what the metric is (classification by default; a text file gives causal_lm).
    With ``out_dir`` it writes ``results.json`` and ``model/`` (weights + manifest: the plan against
    the dense model), which ``prunekit.load`` and ``--model OUT`` read back.

    ``model`` may be the user's own trained ``nn.Module`` (never changed; no baseline is trained) and
    ``data`` a :class:`~prunekit.data.DataSplits` or :class:`~prunekit.data.Loaders` of their
    DataLoaders: the same run, report included. Its folder loads with ``prunekit.load(out / "model",
    model=the_dense_module)``.

    ``max_metric_drop`` (the metric's units: 0.01 is one accuracy point) makes the target the deepest
    cut allowed: the result is the deepest of at most ``tries`` cuts towards it whose fine-tuned
    validation metric is within the budget (:mod:`prunekit.workflows.metric_budget`; every try is
    in ``results["metric_budget"]``); where none is, the dense model is kept, with a warning.
    """
    check_stage(stage)
    check_budget(max_metric_drop, tries)  # NOTE: before the seconds of training and profiling it would follow
    config = train_config or TrainConfig()
    measure = measure or Measure()
    pruner = StructuredPruner(**{"scope": "local", **stage}, seed=config.seed)
    pruner.validate_params()  # NOTE: a bad option fails before seconds of data loading and training.
    check_device(device)
    net, splits = build(model, data, data_dir=data_dir, weights=weights, task=task, seed=config.seed,
                         tokenizer=tokenizer, block_size=block_size, image_size=image_size)
    spec, name = spec_of(model), name_of(model)
    scorer: Any = with_teacher(task_of(splits, task), net, spec)
    splits = capped_splits(splits, measure)
    example = example_of(splits, scorer)
    check_fits(pruner.importance, splits, scorer)
    precheck(net, example, pruner)
    results: dict[str, Any] = {"command": "prune", "model": name, "data": splits.name, "task": scorer.name,
                               "weights": weights, "pruner": pruner.get_params()}
    if (baseline := train_baseline(net, splits, config, baseline_epochs, trained=starts_trained(spec, weights),
                                   progress=progress, device=device, task=scorer)):
        results["baseline"] = baseline
    before = measure_profile(net, example, name, measure, eval_data(splits), scorer)
    finetune = with_epochs(config, finetune_epochs)

    def attempt(target: Mapping[str, Any], epochs: int = finetune_epochs) -> Attempt:
        tried = StructuredPruner(**{**pruner.get_params(), "target": dict(target)})
        model_, plan_, achieved_, steps_, tuned = prune_model(
            net, splits, tried, finetune_epochs=epochs, task=scorer,
            tune=lambda m: fine_tune(m, splits, finetune, progress=progress, device=device, task=scorer))
        return Attempt(tried, model_, plan_, achieved_, steps_, history(tuned) if tuned is not None else None)

    if max_metric_drop is None:
        chosen = attempt(stage["target"])
    else:
        score = torch_scorer(selection_data(splits), scorer, measure)
        found, results["metric_budget"] = prune_within(
            net, pruner.validate_params()[0], max_metric_drop=max_metric_drop, tries=tries, attempt=attempt,
            score=lambda m: score(m)[scorer.metric], higher_is_better=scorer.higher_is_better,
            say=print if progress else None)
        if found is None:
            warnings.warn(f"prune: no cut of the {tries} tried kept the validation {scorer.metric} within "
                          f"{max_metric_drop:g} of the dense model's; the dense model is kept (results.json "
                          f"'metric_budget' lists each try). Allow a larger drop, more fine-tuning, or more tries.",
                          stacklevel=2)
            found = attempt({"ratio": 0.0}, epochs=0)  # NOTE: the dense model as it is
        chosen = found
    pruned, plan, achieved, records = chosen.model, chosen.plan, chosen.achieved, chosen.steps
    if chosen.tuned is not None:
        results["finetune"] = chosen.tuned
    after = measure_profile(pruned, example, f"{name} pruned", measure, eval_data(splits), scorer)
    results.update({"before": before.to_dict(), "after": after.to_dict(), "plan": plan.to_dict(),
                    "architecture": architecture_of(spec, splits),
                    "target": dict(stage["target"]),
                    "achieved": achieved, "steps": records})
    results["table"], results["latency_control"] = compare_models(net, pruned, before, after, example, measure)
    with staged(out_dir) as out:
        if out is not None:
            results["files"] = save_result(pruned, out, spec, splits=splits, task=scorer.name, transforms=[plan],
                                           dense=dense_of(spec, weights, net, baseline),
                                           metrics={"profile": results["after"]})
        evidence = evidence_of(net, pruned, splits, scorer, out_dir, plan=plan, example_inputs=example,
                               scores=getattr(chosen.pruner, "scores_", None), ignore=pruner.ignore or ())
        return finish_with_report(results, out, evidence)
