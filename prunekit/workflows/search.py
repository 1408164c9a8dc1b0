"""The ``search`` workflow: a (trained) model and data in; the searched allocation, its Pareto front
(``OUT/pareto.json``) and the chosen model fine-tuned and saved (``OUT/model/``) out.

:func:`search_model` is the step a recipe's ``search`` stage shares with the command: it builds the
space from the model's graph, the exact cost model, the proxy and (for latency) the look-up table,
runs the strategy, and returns the chosen configuration as a :class:`~prunekit.structured.Plan`
(plus removed blocks) that the next ``prune`` stage applies, and its ranks (module ->
``"method:fraction"``) that the next ``decompose`` stage applies.

Widths and ranks: by default a search picks widths only. ``ranks`` adds a rank dimension per
factorisable layer (:mod:`prunekit.search.ranks`); widths and ranks are then searched together (each
layer is pruned first, then factorised at a fraction of its pruned full rank), or, with
``widths=False``, ranks alone: every channel group keeps its width, for models whose widths must
stay as they are.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.data.text import BYTES
from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.recover import TrainConfig
from prunekit.search.cost import Cost
from prunekit.search.latency_table import LATENCY_MODELS
from prunekit.search.evaluator import Evaluator, Record, successive_halving
from prunekit.search.search import (
    PARETO_FILE, SearchResult, check_constraints, finalists_of, uniform_start, write_pareto,
)
from prunekit.search.search import search as run_search
from prunekit.search.ranks import factorise
from prunekit.search.space import DEFAULT_LEVELS, SearchSpace, build
from prunekit.workflows.common import (
    Data,
    Measure,
    Model,
    build as build_run,
    capped_splits,
    compare_models,
    dense_of,
    eval_data,
    evidence_of,
    example_of,
    finish_with_report,
    is_rank_zero,
    measure_profile,
    name_of,
    reusing_exports,
    save_result,
    spec_of,
    starts_trained,
    task_of,
    with_teacher,
)
from prunekit.workflows.sensitivity import proxy_for
from prunekit.workflows.train import fine_tune, train_baseline, with_epochs

__all__ = ["search", "search_model", "Searched", "worker_objective", "check_parallel", "check_dimensions"]


class Searched(dict):  # type: ignore[type-arg]
    """What :func:`search_model` returns: ``result`` (SearchResult), ``best`` (Record), ``chosen`` (configs), ``plan``
    (the best config's Plan), ``blocks`` (its removed blocks), ``ranks`` (its factorised layers: module ->
    ``"method:fraction"``), ``space``, ``graph``, ``scores``, ``retimed`` (with measured latency under a
    latency constraint: the chosen configuration's second timing, see :func:`_retimed`; else None), ``start``
    (the uniform allocation meeting the constraints that the search started from; None where there is none)."""


def search_model(net: nn.Module, splits: Any, task: Any, *, strategy: str = "greedy", budget: int = 40,
                 constraints: Mapping[str, float], objectives: Sequence[str] = ("metric", "macs"), seed: int = 0,
                 levels: Sequence[float] = DEFAULT_LEVELS, round_to: int = 1, depth: bool = False,
                 ranks: bool | str | Sequence[str] = False, widths: bool = True, importance: str = "l2",
                 bn_batches: int = 2, val_samples: int = 1024, proxy_steps: int = 0, finetune_steps: int = 0,
                 backend: str | None = None, latency_model: str = "table", latency_batch_size: int = 1,
                 latency_threads: int = 2, state_dir: str | os.PathLike[str] | None = None,
                 storage: str | None = None, options: Mapping[str, Any] | None = None, workers: int = 1,
                 rebuild: Mapping[str, Any] | None = None, progress: bool = False) -> Searched:
    """Search ``net``'s widths (and blocks with ``depth``, and factorised layers' ranks with ``ranks``:
    ``True`` or method names, see :func:`prunekit.search.ranks.rank_methods`; ``widths=False`` keeps
    every width) under ``constraints`` (kept fractions of ``macs``/``params``, as the built model
    counts them, ``latency`` in ms on ``backend``'s look-up table) with ``strategy`` at ``budget``
    proxy evaluations. ``latency_model="measured"`` times each configuration's whole model on
    ``backend`` instead of summing the table's layers (slower per configuration, and right where the
    table is not: small models at batch 1, ONNX Runtime's layout changes between layers).
    ``proxy_steps``: fine-tune steps before every proxy evaluation (0: BatchNorm re-estimation only;
    dearer per evaluation, and it ranks configurations near the budget as fine-tuning does);
    ``finetune_steps``: the steps of a last rung that re-ranks the finalists (where above ``proxy_steps``).
    ``latency_batch_size``: the batch size latency is timed at (1: one request at a time; a serving batch
    such as 64 prices what throughput sees, where narrow layers at high resolution cost more per MAC).
    ``latency_threads``: the threads latency is timed with (the run's ``Measure.threads``).

    With ``workers > 1`` (Optuna strategies only) that many processes share the study in
    ``state_dir`` (or ``storage``) until it holds ``budget`` trials; each rebuilds ``net``, the
    data and the task from ``rebuild`` (the keyword arguments of :func:`worker_objective`'s
    ``rebuild``: model spec, data, weights file, ...), since a model is never sent to a process.
    """
    if not constraints:
        raise ConfigError("search needs a constraint: e.g. --target-macs 0.25 (a quarter of the dense MACs "
                          "kept); without one the dense model wins.")
    for flag, steps in (("--proxy-steps", proxy_steps), ("--finetune-steps", finetune_steps)):
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            raise ConfigError(f"search: {flag} is a number of fine-tune batches, an int >= 0; got {steps!r}. "
                              f"Pass e.g. {flag} 32 (0: none).")
    methods = check_dimensions(strategy, ranks=ranks, widths=widths, depth=depth, objectives=objectives,
                               constraints=constraints, backend=backend, latency_model=latency_model,
                               latency_batch_size=latency_batch_size)
    if isinstance(latency_threads, bool) or not isinstance(latency_threads, int) or latency_threads < 1:
        raise ConfigError(f"search: latency_threads is the number of threads latency is timed with, an int >= 1; "
                          f"got {latency_threads!r}. Pass e.g. --threads 1.")
    settings: dict[str, Any] = {
        "constraints": dict(constraints), "levels": list(levels), "round_to": round_to, "depth": depth,
        "ranks": list(methods), "widths": widths,
        "importance": importance, "bn_batches": bn_batches, "val_samples": val_samples,
        "proxy_steps": proxy_steps, "finetune_steps": finetune_steps, "backend": backend,
        "latency_model": latency_model, "latency_batch_size": latency_batch_size,
        "latency_threads": latency_threads, "objectives": list(objectives),
        "state_dir": str(Path(state_dir).absolute()) if state_dir is not None else None}
    options = dict(options or {})
    if workers != 1:
        options.update(_parallel(strategy, workers, rebuild, settings, storage, progress))
    evaluator, graph, scores = _evaluator(net, splits, task, **settings)
    space = evaluator.space
    start = [uniform] if (uniform := uniform_start(evaluator)) is not None else []
    result = run_search(space, objectives, constraints, strategy, budget, seed, evaluator=evaluator,
                        state_dir=state_dir, storage=storage, options=options, start=start)
    if result.best is None:
        raise ConfigError(f"search: no configuration met {dict(constraints)} within {budget} proxy evaluations. "
                          f"Raise --trials, loosen the target, or widen the space (lower --levels).")
    best = result.best
    if finetune_steps > proxy_steps:  # NOTE: the finalists re-ranked after a few fine-tune steps each
        evaluator.budget = None
        finalists = [r.config for r in finalists_of(result.records, evaluator.limits, start,
                                                     higher_is_better=evaluator.maximise)]
        best = successive_halving(evaluator, finalists, rungs=(finetune_steps,))[0]
        best = next(r for r in result.records if r.config == best.config)
    retimed = None
    if evaluator.retime is not None and "latency" in evaluator.limits:
        best, retimed = _retimed(evaluator, result.records, best, evaluator.limits["latency"])
    knee = result.knee()
    chosen = [best.config] + ([knee.config] if knee is not None and knee.config != best.config else [])
    return Searched(result=result, chosen=chosen, plan=space.plan(best.config, scores), best=best,
                    blocks=space.removed_blocks(best.config), ranks=space.ranks(best.config), space=space,
                    graph=graph, scores=scores, retimed=retimed, start=uniform)


RETIMES = 3  # NOTE: configurations timed again at most, best first, before the chosen one is kept anyway


def _retimed(evaluator: Evaluator, records: Sequence[Record], best: Record,
             goal: float) -> tuple[Record, dict[str, Any]]:
    """The configuration to keep once timed again: ``best``, or where its fresh timing misses the
    latency ``goal`` (the search keeps the best of many noisy timings, so the kept one's runs low) the
    next feasible ones by the proxy, up to :data:`RETIMES` in all; the first that holds, else
    ``best`` with a warning (``evaluator.retime``: a fresh timing of a configuration). Returns it
    with the timings."""
    assert evaluator.retime is not None
    others = sorted((r for r in records if r.feasible and r.config != best.config),
                    key=lambda r: -evaluator.goodness(r.values))
    tried: list[dict[str, Any]] = []
    for record in [best, *others][:RETIMES]:
        ms = float(evaluator.retime(record.config))
        tried.append({"config": record.config, "searched_ms": record.values.get("latency"), "retimed_ms": ms})
        if ms <= goal:
            return record, {"goal_ms": goal, "tried": tried, "held": True}
    times = ", ".join(f"{t['retimed_ms']:.3f}" for t in tried)
    warnings.warn(f"search: timed again, none of the {len(tried)} best configurations met the latency goal of "
                  f"{goal:g} ms ({times} ms); the best is kept. The "
                  f"machine's timings vary: run on an idle machine, or ask for a lower latency target.",
                  stacklevel=3)
    return best, {"goal_ms": goal, "tried": tried, "held": False}


def check_dimensions(strategy: str, *, ranks: Any, widths: Any, depth: bool, objectives: Sequence[str] = (),
                     constraints: Mapping[str, float] | None = None, backend: str | None = None,
                     latency_model: str = "table", latency_batch_size: int = 1,
                     recipe: bool = False) -> tuple[str, ...]:
    """The decomposition methods ``ranks`` asks for, once the dimensions asked for make a search
    this strategy and cost model can run; ``recipe``: the messages name the recipe stage's options."""
    from prunekit.search.ranks import rank_methods, untimed as untimed_methods

    def option(name: str, value: Any = None) -> str:
        if recipe:
            return f"{name}: {str(value).lower() if isinstance(value, bool) else value}"
        return f"--{name}" + ("" if value is None or isinstance(value, bool) else f" {value}")
    where, named = "search", "ranks" if recipe else "--ranks"
    methods = rank_methods(ranks, f"search: {named}")
    if not isinstance(widths, bool):
        raise ConfigError(f"{where}: widths is true (search each group's width) or false (keep every width); "
                          f"got {widths!r}.")
    if not widths and not methods and not depth:
        raise ConfigError(f"{where}: {option('widths', False) if recipe else '--no-widths'} leaves nothing to "
                          f"search; add {option('ranks', True)} (factorised layers' ranks) or "
                          f"{option('depth', True)} (residual blocks), or search widths.")
    if methods and strategy == "gates":
        raise ConfigError(f"{where}: strategy 'gates' learns widths only, not the ranks {named} asks for. Use "
                          f"{option('strategy', 'greedy')} (or any other strategy), or drop {named}.")
    if latency_model not in LATENCY_MODELS:
        raise ConfigError(f"{where}: {option('latency-model' if not recipe else 'latency_model', latency_model)} "
                          f"is not a latency model; use one of {', '.join(LATENCY_MODELS)} (table: each layer timed "
                          f"alone, once per width; measured: each configuration's whole model timed).")
    if isinstance(latency_batch_size, bool) or not isinstance(latency_batch_size, int) or latency_batch_size < 1:
        raise ConfigError(f"{where}: {'latency_batch_size' if recipe else '--latency-batch-size'} is the batch size "
                          f"latency is timed at, an int >= 1; got {latency_batch_size!r}. Pass e.g. 1 (one request) "
                          f"or 64.")
    check_constraints(dict(constraints or {}), where)
    latency = _timed(backend, objectives, constraints or {})
    if latency and latency_model == "table" and (untimed := untimed_methods(methods)):
        raise ConfigError(f"{where}: the latency look-up table times factorised layers of the svd, tucker and cp "
                          f"layouts; {', '.join(untimed)} builds layers of its own, which it cannot time. Use a "
                          f"macs or params target and objectives with {', '.join(untimed)}, or drop it from "
                          f"{named}.")
    return methods


def _timed(backend: str | None, objectives: Sequence[str], constraints: Mapping[str, float]) -> bool:
    """Whether a search prices latency: a backend named, a latency objective or a latency bound."""
    return backend is not None or "latency" in objectives or "latency" in constraints or "latency_ms" in constraints


def _evaluator(net: nn.Module, splits: Any, task: Any, *, constraints: Mapping[str, float], levels: Sequence[float],
               round_to: int, depth: bool, importance: str, bn_batches: int, val_samples: int, proxy_steps: int,
               finetune_steps: int, backend: str | None, objectives: Sequence[str],
               state_dir: str | None, ranks: Sequence[str] = (),
               widths: bool = True, latency_model: str = "table",
               latency_batch_size: int = 1, latency_threads: int = 2) -> tuple[Evaluator, DependencyGraph, Any]:
    """The evaluator a search scores with (and the graph and scores its space was built from): the
    same in this process and in every worker, given the same model and data."""
    example = example_of(splits, task)
    graph = DependencyGraph.trace(net, example)
    scores = score(graph, net, importance)
    blocks: list[str] = []
    if depth:
        from prunekit.structured import residual_blocks

        blocks = residual_blocks(net, example)
    choices: dict[str, tuple[str, ...]] = {}
    if ranks:
        from prunekit.search.ranks import rank_choices

        choices = rank_choices(net, example, ranks, levels)
        if not choices:
            raise ConfigError(f"search: no layer of the model can be factorised by {', '.join(ranks)} with fewer "
                              f"MACs at the levels {list(levels)}; expected nn.Linear/nn.Conv2d layers. Lower the "
                              f"levels, try other methods, or drop ranks.")
    space = SearchSpace.from_graph(graph, levels=levels, round_to=round_to, blocks=blocks, ranks=choices,
                                   groups=None if widths else ())
    cost = Cost(net, graph, space, example, scores)
    latency = None
    if _timed(backend, objectives, constraints):
        from prunekit.search.latency_table import LatencyTable

        table = LatencyTable(net, graph, space, example, backend=backend or "torch", cost=cost,
                             batch_size=latency_batch_size, threads=latency_threads,
                             cache_dir=Path(state_dir) / "latency" if state_dir is not None else None)
        latency = table.measured if latency_model == "measured" else table.predict
    proxy = proxy_for(splits, task, bn_batches=bn_batches, val_samples=val_samples,
                      finetune_steps=max(proxy_steps, finetune_steps))
    evaluator = Evaluator(space, constraints, model=net, graph=graph, scores=scores, metric=proxy, cost=cost,
                          latency=latency, example_inputs=example, fidelity=proxy_steps,
                          retime=table.measure if latency is not None and latency_model == "measured" else None)
    return evaluator, graph, scores


def _parallel(strategy: str, workers: int, rebuild: Mapping[str, Any] | None, settings: Mapping[str, Any],
              storage: str | None, progress: bool) -> dict[str, Any]:
    """The strategy options that run it in ``workers`` processes (checked here, before any work)."""
    from prunekit.search.study import Factory

    check_parallel(strategy, workers)
    if rebuild is None or (settings["state_dir"] is None and storage is None):
        raise ConfigError(f"search: --workers {workers} needs a folder or database for the shared study and "
                          f"what each worker rebuilds the model from; pass out_dir (or storage) and use "
                          f"prunekit.workflows.search.search, or search_model(..., rebuild={{...}}).")
    arguments = {"rebuild": dict(rebuild), "settings": dict(settings)}
    return {"workers": workers, "progress": progress,
            "factory": Factory("prunekit.workflows.search:worker_objective", arguments)}


def check_parallel(strategy: str, workers: Any, *, recipe: bool = False) -> None:
    """``workers`` is an int >= 1, and more than one only with a strategy whose trials they can share;
    ``recipe``: the messages name the recipe stage's options (``workers: 2``), not the flags."""
    from prunekit.search.strategies.optuna_samplers import PARALLEL
    from prunekit.search.study import check_workers

    def option(name: str, value: Any) -> str:
        return f"{name}: {value}" if recipe else f"--{name} {value}"
    where, verb = ("workers", "Use") if recipe else ("search: --workers", "Pass")
    check_workers(workers, where)
    if workers > 1 and strategy not in PARALLEL:
        raise ConfigError(f"{'' if recipe else 'search: '}{option('workers', workers)} needs a strategy whose "
                          f"trials workers can share ({', '.join(PARALLEL)}); got '{strategy}', which runs one "
                          f"step after another. {verb} {option('strategy', 'tpe')} (or nsga2, gp), or "
                          f"{option('workers', 1)}.")


def _size(value: Any) -> int | tuple[int, int] | None:
    """An image size sent to a worker as JSON (a list there) as ``build`` takes it."""
    return (value[0], value[1]) if isinstance(value, list) else value


def worker_objective(rebuild: Mapping[str, Any], settings: Mapping[str, Any]) -> Any:
    """What a search worker process runs: the model, data and task rebuilt from ``rebuild``
    (``model``, ``data``, ``data_dir``, ``image_size``, ``weights``, ``task``, ``seed``, ``max_eval_batches``,
    ``eval_batch_size``), the evaluator from ``settings``, and its Optuna trial objective."""
    from prunekit.search.strategies.optuna_samplers import trial_objective

    net, splits = build_run(rebuild["model"], rebuild["data"], data_dir=rebuild.get("data_dir"),
                            tokenizer=rebuild.get("tokenizer"), block_size=rebuild.get("block_size"),
                            image_size=_size(rebuild.get("image_size")), weights=rebuild.get("weights"),
                            task=rebuild.get("task"), seed=rebuild.get("seed", 0))
    measure = Measure(max_eval_batches=rebuild.get("max_eval_batches"),
                      eval_batch_size=rebuild.get("eval_batch_size", Measure.eval_batch_size))
    splits = capped_splits(splits, measure)
    task = with_teacher(task_of(splits, rebuild.get("task")), net, rebuild["model"])
    evaluator, _, _ = _evaluator(net.cpu().eval(), splits, task, **settings)
    return trial_objective(evaluator, settings["objectives"])


def _rebuild(model: str, data: str, net: nn.Module, state_dir: Path | None, *, weights: str | None,
             task: str | None, data_dir: str | None, seed: int, measure: Measure, tokenizer: str | None,
             block_size: int | None, trained: bool,
             image_size: int | tuple[int, int] | None = None) -> dict[str, Any] | None:
    """What a worker rebuilds this run's model and data from; a baseline trained here is saved
    first (``state_dir/baseline.safetensors``), so every worker scores the same weights."""
    if state_dir is None:
        return None
    if trained:
        from prunekit.io import save_weights

        state_dir.mkdir(parents=True, exist_ok=True)
        weights = str(save_weights(net, state_dir / "baseline.safetensors"))
    absolute = (lambda p: str(Path(p).absolute()) if p is not None and Path(p).exists() else p)  # noqa: E731
    return {"model": model, "data": absolute(data), "data_dir": absolute(data_dir), "weights": absolute(weights),
            "tokenizer": tokenizer if tokenizer == BYTES else absolute(tokenizer), "block_size": block_size,
            "image_size": image_size, "task": task, "seed": seed, "max_eval_batches": measure.max_eval_batches,
            "eval_batch_size": measure.eval_batch_size}


def _finetuned(net: nn.Module, found: Searched, config: dict[str, Any], splits: Any, task: Any,
               tune: TrainConfig, device: Any, progress: bool) -> tuple[nn.Module, dict[str, Any], Any]:
    """``config``'s model fine-tuned, its metrics, and its factorised layers (a DecomposeResult, or None)."""
    space, example = found["space"], example_of(splits, task)
    model = build(net, found["graph"], space, space.unfactorised(config), found["scores"], example_inputs=example)
    factorised = None
    if ranks := space.ranks(config):
        factorised = factorise(model, ranks, example)
        model = factorised.model
    if tune.epochs > 0:
        fine_tune(model, splits, tune, progress=progress, device=device, task=task)
    metrics = dict(task.evaluate(model.cpu(), _eval_batches(splits)))
    return model, metrics, factorised


def _eval_batches(splits: Any) -> Any:
    from prunekit.data import DataSplits

    if isinstance(splits, DataSplits):
        x, y = splits.test.tensors
        return [(x[i:i + 512], y[i:i + 512]) for i in range(0, len(x), 512)]
    return eval_data(splits)


@reusing_exports
def search(model: Model, data: Data = "fashion_mnist", *, strategy: str = "greedy", constraints: Mapping[str, float],
           objectives: Sequence[str] = ("metric", "macs"), trials: int = 40, seed: int = 0,
           weights: str | None = None, task: str | None = None, data_dir: str | None = None,
           tokenizer: str | None = None, block_size: int | None = None, image_size: int | tuple[int, int] | None = None,
           levels: Sequence[float] = DEFAULT_LEVELS, round_to: int = 1, depth: bool = False,
           ranks: bool | str | Sequence[str] = False, widths: bool = True, bn_batches: int = 2,
           val_samples: int = 1024, proxy_steps: int = 0, finetune_steps: int = 0,
           backend: str | None = None, latency_model: str = "table", latency_batch_size: int = 1,
           storage: str | None = None, workers: int = 1, baseline_epochs: int = 1,
           finetune_epochs: int = 1, train_config: TrainConfig | None = None,
           out_dir: str | os.PathLike[str] | None = None, progress: bool = False, measure: Measure | None = None,
           device: str | torch.device | None = None) -> dict[str, Any]:
    """Baseline (or ``weights``), search, then fine-tune the chosen points for real (the best under
    the constraints, and the front's knee) and report them next to the proxy's prediction; with
    ``out_dir`` writes ``pareto.json``, ``results.json``, the search state (resumable: run the same
    command again) and the best model as ``model/``. ``backend`` is the runtime the latency
    look-up table times layers on (``latency_model="measured"``: each configuration's whole model is
    timed there instead), at batch size ``latency_batch_size``; ``workers`` processes share an Optuna
    strategy's study (the SQLite file under ``out_dir`` or ``storage``), each scoring trials until
    ``trials`` are done.
    ``ranks`` / ``widths``: as :func:`search_model`'s; the chosen ranks are in the results (``ranks``)
    and the saved model is factorised as they say.

    ``model`` may be the user's own trained ``nn.Module`` (never changed; no baseline is trained) and
    ``data`` a :class:`~prunekit.data.DataSplits` or :class:`~prunekit.data.Loaders` of their
    DataLoaders (one worker: other processes rebuild the model from a spec); the folder then loads
    with ``prunekit.load(out / "model", model=the_dense_module)``.
    """
    config = train_config or TrainConfig()
    check_parallel(strategy, workers)
    if workers > 1 and not (isinstance(model, str) and isinstance(data, str)):
        raise ConfigError(f"search: {workers} workers rebuild the model and data from their specs in other "
                          f"processes; got a {type(model).__name__} and a {type(data).__name__}. Pass workers=1, "
                          f"or a spec (a saved folder: prunekit.save(model, DIR)) and a dataset name or path.")
    check_dimensions(strategy, ranks=ranks, widths=widths, depth=depth, objectives=objectives,
                     constraints=constraints, backend=backend, latency_model=latency_model,
                     latency_batch_size=latency_batch_size)
    if storage is not None:
        from prunekit.search.strategies.optuna_samplers import PARALLEL

        if strategy not in PARALLEL:
            raise ConfigError(f"search: --storage holds an Optuna study, which only {', '.join(PARALLEL)} keep; got "
                              f"--strategy {strategy}, which would ignore it. Pass --strategy tpe (or nsga2, gp), "
                              f"or drop --storage.")
    if workers > 1 and out_dir is None:
        raise ConfigError(f"search: --workers {workers} need an output folder (the shared study, the baseline "
                          f"weights they load and their logs live there); got none. Pass --out DIR (out_dir=...).")
    measure = measure or Measure()
    net, splits = build_run(model, data, data_dir=data_dir, weights=weights, task=task, seed=config.seed,
                            tokenizer=tokenizer, block_size=block_size, image_size=image_size)
    splits = capped_splits(splits, measure)
    spec, name = spec_of(model), name_of(model)
    task_obj = with_teacher(task_of(splits, task), net, spec)
    results: dict[str, Any] = {"command": "search", "model": name, "data": splits.name, "strategy": strategy,
                               "constraints": dict(constraints), "objectives": list(objectives), "trials": trials,
                               "seed": seed, "latency_model": latency_model, "latency_batch_size": latency_batch_size,
                               "proxy_steps": proxy_steps}
    if (baseline := train_baseline(net, splits, config, baseline_epochs, trained=starts_trained(spec, weights),
                                   progress=progress, device=device, task=task_obj)):
        results["baseline_training"] = baseline
    net = net.cpu()
    state_dir = Path(out_dir) / "search-state" if out_dir is not None else None
    rebuild = None
    if spec is not None and workers > 1:
        rebuild = _rebuild(spec, str(data), net, state_dir, weights=weights, task=task, data_dir=data_dir,
                           seed=config.seed, measure=measure, tokenizer=tokenizer, block_size=block_size,
                           image_size=image_size, trained="baseline_training" in results)
    found = search_model(net, splits, task_obj, strategy=strategy, budget=trials, constraints=constraints,
                         objectives=objectives, seed=seed, levels=levels, round_to=round_to, depth=depth,
                         ranks=ranks, widths=widths, bn_batches=bn_batches, val_samples=val_samples,
                         proxy_steps=proxy_steps, finetune_steps=finetune_steps,
                         backend=backend, latency_model=latency_model, latency_batch_size=latency_batch_size,
                         latency_threads=measure.threads, state_dir=state_dir, storage=storage,
                         workers=workers,
                         rebuild=rebuild, progress=progress)
    result: SearchResult = found["result"]
    tune = with_epochs(config, finetune_epochs)
    example = example_of(splits, task_obj)
    reports, tuned_models, factorised = [], [], []
    for i, chosen in enumerate(found["chosen"]):
        record = next(r for r in result.records if r.config == chosen)
        tuned, metrics, layers = _finetuned(net, found, chosen, splits, task_obj, tune, device, progress)
        tuned_models.append(tuned)
        factorised.append(layers)
        reports.append({"which": "best" if i == 0 else "knee", "config": chosen, "proxy": record.values,
                        "finetuned": metrics, "finetune_epochs": finetune_epochs})
    best_model = tuned_models[0]
    before = measure_profile(net, example, name, measure, eval_data(splits), task_obj)
    after = measure_profile(best_model, example, f"{name} searched", measure, eval_data(splits), task_obj)
    results.update({"search": {k: v for k, v in result.to_dict().items() if k != "records"},
                    "evaluated": len(result.records), "chosen": reports, "plan": found["plan"].to_dict(),
                    "removed_blocks": found["blocks"], "ranks": found["ranks"], "retimed": found["retimed"],
                    "before": before.to_dict(),
                    "after": after.to_dict()})
    results["table"], results["latency_control"] = compare_models(net, best_model, before, after, example, measure)
    if out_dir is not None and is_rank_zero():
        results["pareto_file"] = str(write_pareto(result, out_dir, found["chosen"]))
        # NOTE: the factorised layers after the plan, in the order build applied them
        transforms = [found["plan"]] + ([factorised[0]] if factorised[0] is not None else [])
        results["files"] = save_result(best_model, out_dir, spec, splits=splits, task=task_obj.name,
                                       transforms=transforms, dense=dense_of(spec, weights, net, baseline),
                                       metrics={"profile": results["after"]})
    evidence = evidence_of(net, best_model, splits, task_obj, out_dir, plan=found["plan"], example_inputs=example)
    return finish_with_report(results, out_dir, evidence)


__all__ += ["PARETO_FILE"]
