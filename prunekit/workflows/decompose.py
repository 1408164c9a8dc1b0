"""The ``decompose`` workflow: baseline, profile, low-rank factorisation, fine-tune, profile, save.

Mirrors :mod:`prunekit.workflows.prune` with :func:`prunekit.decompose.decompose` in place of
channel pruning; :func:`decompose_model` is the step a recipe's ``decompose`` stage shares. The
budget is a :class:`~prunekit.structured.Target` (``{"macs": 0.5}``: keep half the MACs), or a
per-layer ``rank`` / ``energy`` rule.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from prunekit.data import DataSplits
from prunekit.decompose import DecomposeResult
from prunekit.decompose import decompose as factorise
from prunekit.decompose.lowrank import check_arguments
from prunekit.recover import TrainConfig
from prunekit.structured import Target
from prunekit.workflows.common import (
    Data,
    Measure,
    Model,
    architecture_of,
    build,
    calibration_batches,
    capped_splits,
    check_device,
    compare_models,
    dense_of,
    eval_data,
    evidence_of,
    example_of,
    finish_with_report,
    measure_profile,
    name_of,
    reusing_exports,
    save_result,
    staged,
    spec_of,
    starts_trained,
    task_of,
    with_teacher,
)
from prunekit.workflows.train import fine_tune, history, train_baseline, with_epochs

__all__ = ["decompose", "decompose_model"]


def _check(net: nn.Module, *, method: str = "auto", rank: Any = None, energy: float | None = None,
           target: Any = None, include: Sequence[str] | None = None, ignore: Sequence[str] = (),
           options: Mapping[str, Any] | None = None, calibration_batches: int = 4) -> None:
    check_arguments(net, method=method, rank=rank, energy=energy, target=target,
                    include=include, ignore=tuple(ignore), options=options)


def decompose_model(net: nn.Module, splits: Any, *, method: str = "auto", rank: Any = None,
                    energy: float | None = None, target: Target | Mapping[str, Any] | None = None,
                    include: Sequence[str] | None = None, ignore: Sequence[str] = (),
                    options: Mapping[str, Any] | None = None, calibration_batches: int = 4,
                    progress: bool = False, task: Any = None) -> DecomposeResult:
    """Factorise ``net``'s layers (a copy) by ``method`` to the ``target``/``rank``/``energy`` rule;
    ``asvd``/``auto`` whiten with the inputs of the first ``calibration_batches`` training batches
    (image DataSplits or Loaders; ``task`` says where a batch holds its inputs)."""
    rank = tuple(rank) if isinstance(rank, list) else rank
    task = task_of(splits, task)
    return factorise(net, example_inputs=example_of(splits, task), method=method, rank=rank, energy=energy,
                     target=target, include=include, ignore=tuple(ignore),
                     options=dict(options) if options else None,
                     calibration=calibration_batches_of(splits, calibration_batches, task), progress=progress)


def calibration_batches_of(splits: Any, count: int, task: Any = None) -> list[Any]:
    """The model inputs of the first ``count`` training batches (of 64 for image data)."""
    batches = calibration_batches(splits, count, task=task)
    return [b[0] for b in batches] if isinstance(splits, DataSplits) else batches


@reusing_exports
def decompose(model: Model, data: Data = "fashion_mnist", *, stage: Mapping[str, Any],
              weights: str | None = None, baseline_epochs: int = 1, finetune_epochs: int = 1,
              train_config: TrainConfig | None = None, data_dir: str | None = None,
              tokenizer: str | None = None, block_size: int | None = None,
              image_size: int | tuple[int, int] | None = None,
              out_dir: str | os.PathLike[str] | None = None, progress: bool = False,
              measure: Measure | None = None, device: str | torch.device | None = None,
              task: str | None = None) -> dict[str, Any]:
    """Train ``baseline_epochs`` (when no ``weights``), profile, factorise, fine-tune, profile, save.

    ``stage`` holds :func:`decompose_model`'s options, the keys of a recipe's ``decompose`` stage
    (``method``, one of ``target``/``rank``/``energy``, ``include``, ``ignore``, ``options``,
    ``calibration_batches``). Returns the results dict with the before/after profiles, the
    per-layer records and the comparison ``table``; ``out_dir`` gets ``model/`` too. ``task`` says
    what the metric and loss are (default: what the data fits).

    ``model`` may be the user's own trained ``nn.Module`` (never changed; no baseline is trained) and
    ``data`` a :class:`~prunekit.data.DataSplits` or :class:`~prunekit.data.Loaders` of their
    DataLoaders; the folder then loads with ``prunekit.load(out / "model", model=the_dense_module)``.
    """
    options = dict(stage)
    config = train_config or TrainConfig()
    measure = measure or Measure()
    check_device(device)
    net, splits = build(model, data, data_dir=data_dir, weights=weights, task=task, seed=config.seed,
                         tokenizer=tokenizer, block_size=block_size, image_size=image_size)
    spec, name = spec_of(model), name_of(model)
    splits, scorer = capped_splits(splits, measure), with_teacher(task_of(splits, task), net, spec)
    example = example_of(splits, scorer)
    results: dict[str, Any] = {"command": "decompose", "model": name, "data": splits.name, "task": scorer.name,
                               "weights": weights, "stage": options}
    _check(net, **options)  # NOTE: a bad rank, method or layer pattern fails before seconds of training.
    if (baseline := train_baseline(net, splits, config, baseline_epochs, trained=starts_trained(spec, weights),
                                   progress=progress, device=device, task=scorer)):
        results["baseline"] = baseline
    before = measure_profile(net, example, name, measure, eval_data(splits), scorer)
    result = decompose_model(net, splits, **options, progress=progress, task=scorer)
    factorised = result.model
    if finetune_epochs > 0:
        results["finetune"] = history(fine_tune(factorised, splits, with_epochs(config, finetune_epochs),
                                                progress=progress, device=device, task=scorer))
    after = measure_profile(factorised, example, f"{name} {options.get('method', 'auto')}",
                            measure, eval_data(splits), scorer)
    results.update({"before": before.to_dict(), "after": after.to_dict(), "decomposition": result.to_dict(),
                    "architecture": architecture_of(spec, splits), "layers_table": result.table()})
    results["table"], results["latency_control"] = compare_models(net, factorised, before, after, example, measure)
    with staged(out_dir) as out:
        if out is not None:
            results["files"] = save_result(factorised, out, spec, splits=splits, task=scorer.name,
                                           transforms=[result], dense=dense_of(spec, weights, net, baseline),
                                           metrics={"profile": results["after"]})
        return finish_with_report(results, out, evidence_of(net, factorised, splits, scorer, out_dir))
