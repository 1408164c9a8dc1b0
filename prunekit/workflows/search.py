"""The ``search`` workflow: a (trained) model and data in; the searched allocation, its Pareto front
(``OUT/pareto.json``) and the chosen model fine-tuned and saved (``OUT/model/``) out.

:func:`search_model` is the step a recipe's ``search`` stage shares with the command: it builds the
space from the model's graph, the exact cost model, the proxy and (for latency) the look-up table,
runs the strategy, and returns the chosen configuration as a :class:`~prunekit.structured.Plan`
(plus removed blocks) that the next ``prune`` stage applies.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.recover import TrainConfig
from prunekit.search.cost import Cost
from prunekit.search.evaluator import Evaluator, successive_halving
from prunekit.search.search import PARETO_FILE, SearchResult, write_pareto
from prunekit.search.search import search as run_search
from prunekit.search.space import DEFAULT_LEVELS, SearchSpace, build
from prunekit.workflows.common import (
    Measure,
    build as build_run,
    capped_splits,
    compare_models,
    eval_data,
    example_of,
    evidence_of,
    finish_with_report,
    has_weights,
    is_rank_zero,
    measure_profile,
    save_result,
    task_of,
    with_teacher,
)
from prunekit.workflows.sensitivity import proxy_for
from prunekit.workflows.train import fine_tune, train_baseline, with_epochs

__all__ = ["search", "search_model", "Searched"]


class Searched(dict):  # type: ignore[type-arg]
    """What :func:`search_model` returns: ``result`` (SearchResult), ``best`` (Record), ``chosen`` (configs), ``plan``
    (the best config's Plan), ``blocks`` (its removed blocks), ``space``, ``graph``, ``scores``."""


def search_model(net: nn.Module, splits: Any, task: Any, *, strategy: str = "greedy", budget: int = 40,
                 constraints: Mapping[str, float], objectives: Sequence[str] = ("metric", "macs"), seed: int = 0,
                 levels: Sequence[float] = DEFAULT_LEVELS, round_to: int = 1, depth: bool = False,
                 importance: str = "l2", bn_batches: int = 2, val_samples: int = 1024, finetune_steps: int = 0,
                 latency_backend: str | None = None, state_dir: str | os.PathLike[str] | None = None,
                 storage: str | None = None, options: Mapping[str, Any] | None = None) -> Searched:
    """Search ``net``'s widths (and blocks with ``depth``) under ``constraints`` (kept fractions of
    ``macs``/``params``, ``latency`` in ms) with ``strategy`` at ``budget`` proxy evaluations."""
    if not constraints:
        raise ConfigError("search needs a constraint: e.g. --target-macs 0.25 (a quarter of the dense MACs "
                          "kept); without one the dense model wins.")
    example = example_of(splits, task)
    graph = DependencyGraph.trace(net, example)
    scores = score(graph, net, importance)
    blocks: list[str] = []
    if depth:
        from prunekit.structured import residual_blocks

        blocks = residual_blocks(net, example)
    space = SearchSpace.from_graph(graph, levels=levels, round_to=round_to, blocks=blocks)
    cost = Cost(net, graph, space, example, scores)
    latency = None
    if latency_backend is not None or "latency" in objectives or "latency" in constraints:
        from prunekit.search.latency_table import LatencyTable

        table = LatencyTable(net, graph, space, example, backend=latency_backend or "torch", cost=cost,
                             cache_dir=Path(state_dir) / "latency" if state_dir is not None else None)
        latency = table.predict
    proxy = proxy_for(splits, task, bn_batches=bn_batches, val_samples=val_samples, finetune_steps=finetune_steps)
    evaluator = Evaluator(space, constraints, model=net, graph=graph, scores=scores, metric=proxy, cost=cost,
                          latency=latency)
    result = run_search(space, objectives, constraints, strategy, budget, seed, evaluator=evaluator,
                        state_dir=state_dir, storage=storage, options=options)
    if result.best is None:
        raise ConfigError(f"search: no configuration met {dict(constraints)} within {budget} proxy evaluations. "
                          f"Raise --trials, loosen the target, or widen the space (lower --levels).")
    best = result.best
    if finetune_steps > 0:  # NOTE: successive halving re-ranks the top candidates with a few fine-tune steps
        top = sorted((r for r in result.records if r.feasible), key=lambda r: -r.values["metric"])[:4]
        evaluator.budget = None
        best = successive_halving(evaluator, [r.config for r in top], rungs=(0, finetune_steps))[0]
        best = next(r for r in result.records if r.config == best.config)
    knee = result.knee()
    chosen = [best.config] + ([knee.config] if knee is not None and knee.config != best.config else [])
    return Searched(result=result, chosen=chosen, plan=space.plan(best.config, scores), best=best,
                    blocks=space.removed_blocks(best.config), space=space, graph=graph, scores=scores)


def _finetuned(net: nn.Module, found: Searched, config: dict[str, Any], splits: Any, task: Any,
               tune: TrainConfig, device: Any, progress: bool) -> tuple[nn.Module, dict[str, Any]]:
    model = build(net, found["graph"], found["space"], config, found["scores"], example_inputs=example_of(splits, task))
    if tune.epochs > 0:
        fine_tune(model, splits, tune, progress=progress, device=device, task=task)
    metrics = dict(task.evaluate(model.cpu(), _eval_batches(splits)))
    return model, metrics


def _eval_batches(splits: Any) -> Any:
    from prunekit.data import DataSplits

    if isinstance(splits, DataSplits):
        x, y = splits.test.tensors
        return [(x[i:i + 512], y[i:i + 512]) for i in range(0, len(x), 512)]
    return eval_data(splits)


def search(model: str, data: str = "fashion_mnist", *, strategy: str = "greedy", constraints: Mapping[str, float],
           objectives: Sequence[str] = ("metric", "macs"), trials: int = 40, seed: int = 0,
           weights: str | None = None, task: str | None = None, data_dir: str | None = None,
           levels: Sequence[float] = DEFAULT_LEVELS, round_to: int = 1, depth: bool = False,
           bn_batches: int = 2, val_samples: int = 1024, finetune_steps: int = 0,
           latency_backend: str | None = None, storage: str | None = None, baseline_epochs: int = 1,
           finetune_epochs: int = 1, train_config: TrainConfig | None = None,
           out_dir: str | os.PathLike[str] | None = None, progress: bool = False, measure: Measure | None = None,
           device: str | torch.device | None = None) -> dict[str, Any]:
    """Baseline (or ``weights``), search, then fine-tune the chosen points for real (the best under
    the constraints, and the front's knee) and report them next to the proxy's prediction; with
    ``out_dir`` writes ``pareto.json``, ``results.json``, the search state (resumable: run the same
    command again) and the best model as ``model/``."""
    config = train_config or TrainConfig()
    measure = measure or Measure()
    net, splits = build_run(model, data, data_dir=data_dir, weights=weights, task=task, seed=config.seed)
    splits = capped_splits(splits, measure)
    task_obj = with_teacher(task_of(splits, task), net, model)
    results: dict[str, Any] = {"command": "search", "model": model, "data": splits.name, "strategy": strategy,
                               "constraints": dict(constraints), "objectives": list(objectives), "trials": trials,
                               "seed": seed}
    if (baseline := train_baseline(net, splits, config, baseline_epochs, trained=has_weights(model, weights),
                                   progress=progress, device=device, task=task_obj)):
        results["baseline_training"] = baseline
    net = net.cpu()
    state_dir = Path(out_dir) / "search-state" if out_dir is not None else None
    found = search_model(net, splits, task_obj, strategy=strategy, budget=trials, constraints=constraints,
                         objectives=objectives, seed=seed, levels=levels, round_to=round_to, depth=depth,
                         bn_batches=bn_batches, val_samples=val_samples, finetune_steps=finetune_steps,
                         latency_backend=latency_backend, state_dir=state_dir, storage=storage)
    result: SearchResult = found["result"]
    tune = with_epochs(config, finetune_epochs)
    example = example_of(splits, task_obj)
    reports, tuned_models = [], []
    for i, chosen in enumerate(found["chosen"]):
        record = next(r for r in result.records if r.config == chosen)
        tuned, metrics = _finetuned(net, found, chosen, splits, task_obj, tune, device, progress)
        tuned_models.append(tuned)
        reports.append({"which": "best" if i == 0 else "knee", "config": chosen, "proxy": record.values,
                        "finetuned": metrics, "finetune_epochs": finetune_epochs})
    best_model = tuned_models[0]
    before = measure_profile(net, example, model, measure, eval_data(splits), task_obj)
    after = measure_profile(best_model, example, f"{model} searched", measure, eval_data(splits), task_obj)
    results.update({"search": {k: v for k, v in result.to_dict().items() if k != "records"},
                    "evaluated": len(result.records), "chosen": reports, "plan": found["plan"].to_dict(),
                    "removed_blocks": found["blocks"], "before": before.to_dict(), "after": after.to_dict()})
    results["table"], results["latency_control"] = compare_models(net, best_model, before, after, example, measure)
    if out_dir is not None and is_rank_zero():
        results["pareto_file"] = str(write_pareto(result, out_dir, found["chosen"]))
        results["files"] = save_result(best_model, out_dir, model, splits=splits, task=task_obj.name,
                                       transforms=[found["plan"]])
    evidence = evidence_of(net, best_model, splits, task_obj, out_dir, plan=found["plan"], example_inputs=example)
    return finish_with_report(results, out_dir, evidence)


__all__ += ["PARETO_FILE"]
