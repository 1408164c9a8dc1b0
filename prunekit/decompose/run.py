"""The ``prunekit decompose`` pipeline: baseline, profile, factorise, fine-tune, profile again.

Mirrors :func:`prunekit.pipeline.prune` with :func:`~prunekit.decompose.decompose` in place of
channel pruning, and returns the same kind of JSON-ready results dict (written to
``out_dir/results.json``), plus the factorised model in ``out_dir/decomposed/``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prunekit.decompose.lowrank import check_arguments, decompose
from prunekit.decompose.save import RECORD_FILE, WEIGHTS_FILE, save_decomposed
from prunekit.io import save_json
from prunekit.measure import compare, profile
from prunekit.measure.latency import DEFAULT_BACKENDS
from prunekit.pipeline import build, environment, is_rank_zero, train_baseline, with_epochs
from prunekit.pipeline import calibration_batches as calibration_batches_of
from prunekit.recover import TrainConfig, fit

__all__ = ["decompose_model"]


def decompose_model(model: str, data: str = "fashion_mnist", *, method: str = "auto",
                    rank: int | float | str | None = None, energy: float | None = None,
                    target: Mapping[str, Any] | None = None, include: Sequence[str] | None = None,
                    ignore: Sequence[str] = (), options: Mapping[str, Any] | None = None,
                    weights: str | None = None, baseline_epochs: int = 1, finetune_epochs: int = 1,
                    train_config: TrainConfig | None = None, calibration_batches: int = 4,
                    data_dir: str | None = None, out_dir: str | os.PathLike[str] | None = None,
                    progress: bool = True, batch_sizes: Sequence[int] = (1, 64), threads: int = 2,
                    backends: Sequence[str] = DEFAULT_BACKENDS) -> dict[str, Any]:
    """Train ``baseline_epochs`` (when no ``weights``), profile, factorise, fine-tune, profile.

    The rank rule is one of ``rank``, ``energy`` or ``target`` (``{"macs": 0.5}``, see
    :func:`~prunekit.decompose.decompose`); ``asvd``/``auto`` whiten with the first
    ``calibration_batches`` training batches of 64. Returns the results dict with the before/after
    profiles, the per-layer records and the comparison ``table``.
    """
    config = train_config or TrainConfig()
    net, splits = build(model, data, data_dir=data_dir, weights=weights, seed=config.seed)
    example = splits.example_input(1)
    results: dict[str, Any] = {"command": "decompose", "model": model, "data": splits.name,
                               "weights": weights, "method": method, "rank": rank, "energy": energy,
                               "target": target}
    # NOTE: a bad rank, method or layer pattern fails here, before seconds of training.
    check_arguments(net, method=method, rank=rank, energy=energy, target=target,
                    include=include, ignore=ignore, options=options)
    if (baseline := train_baseline(net, splits, config, baseline_epochs, weights=weights, progress=progress)):
        results["baseline"] = baseline
    measure = {"batch_sizes": tuple(batch_sizes), "threads": threads, "backends": tuple(backends),
               "dataset": splits.test}
    before = profile(net, example, name=model, **measure)
    result = decompose(net, example_inputs=example, method=method, rank=rank, energy=energy,
                       target=target, include=include, ignore=ignore, options=options,
                       calibration=[x for x, _ in calibration_batches_of(splits, calibration_batches)],
                       progress=progress)
    factorised = result.model
    if finetune_epochs > 0:
        tuned = fit(factorised, splits, with_epochs(config, finetune_epochs), progress=progress)
        results["finetune"] = {"history": list(tuned.history), "wall_time_s": tuned.wall_time_s}
    after = profile(factorised, example, name=f"{model} {method}", **measure)
    architecture = {"model": model, "num_classes": splits.num_classes, "in_channels": splits.input_shape[0]}
    results.update({"before": before.to_dict(), "after": after.to_dict(), "decomposition": result.to_dict(),
                    "architecture": architecture, "layers_table": result.table(),
                    "table": compare(before, after)})
    if out_dir is not None and is_rank_zero():
        folder = save_decomposed(factorised, result, Path(out_dir) / "decomposed", architecture=architecture)
        results["files"] = {"decomposed": str(folder), "weights": str(folder / WEIGHTS_FILE),
                            "record": str(folder / RECORD_FILE)}
    results["environment"] = environment()
    if out_dir is not None and is_rank_zero():
        save_json(results, Path(out_dir) / "results.json")
    return results


