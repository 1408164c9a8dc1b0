"""The reference pipeline's steps as library calls: build, train, evaluate, profile, prune.

Each step takes plain arguments, does its work through the package's own functions, and returns a
JSON-ready results dict (also written to ``out_dir/results.json`` when an ``out_dir`` is given).
The CLI and, later, the recipe runner are thin layers over these functions.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit import data as datasets
from prunekit._seed import seeded
from prunekit import models
from prunekit.data import DataSplits
from prunekit.graph import DependencyGraph
from prunekit.io import RECORD_FILE, WEIGHTS_FILE, save_json, save_pruned
from prunekit.measure import Profile, compare, evaluate, profile
from prunekit.measure.latency import DEFAULT_BACKENDS
from prunekit.recover import TrainConfig, fit, parse_config
from prunekit.structured import Plan, StructuredPruner, allocate, compose, prune_iteratively

__all__ = ["build", "train", "evaluate_model", "profile_model", "prune", "environment", "is_rank_zero"]


def build(model: str, data: str, *, data_dir: str | None = None, weights: str | None = None,
          seed: int = 0) -> tuple[nn.Module, DataSplits]:
    """Load ``data`` and create ``model`` sized for it (class count and input channels)."""
    models.MODELS.get(model)  # NOTE: a misspelt model name fails before seconds of data loading.
    splits = datasets.load(data, data_dir=data_dir, seed=seed)
    with seeded(seed):  # NOTE: the initial weights; the caller's RNG state is restored after.
        net = models.create(model, num_classes=splits.num_classes, in_channels=splits.input_shape[0],
                            weights=weights)
    return net, splits


def _example_input(model_name: str, splits: DataSplits | None, in_channels: int | None = None) -> torch.Tensor:
    if splits is not None:
        return splits.example_input(1)
    return models.example_input(model_name, batch_size=1, in_channels=in_channels)


def is_rank_zero() -> bool:
    """True unless this is a non-zero rank of a torchrun/DDP job (only rank 0 writes and prints)."""
    return int(os.environ.get("RANK", "0")) == 0


def environment() -> dict[str, Any]:
    """Where the numbers were measured: versions, processor and thread count."""
    from prunekit import __version__

    return {
        "prunekit": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _finish(results: dict[str, Any], out_dir: str | os.PathLike[str] | None) -> dict[str, Any]:
    results["environment"] = environment()
    if out_dir is not None and is_rank_zero():
        save_json(results, Path(out_dir) / "results.json")
    return results


def train(model: str, data: str = "fashion_mnist", config: TrainConfig | None = None, *,
          data_dir: str | None = None, weights: str | None = None,
          out_dir: str | os.PathLike[str] | None = None, resume: bool = False, progress: bool = True,
          profile_after: bool = True, batch_sizes: Sequence[int] = (1, 64), threads: int = 2,
          backends: Sequence[str] = DEFAULT_BACKENDS) -> dict[str, Any]:
    """Train ``model`` on ``data`` (baseline or fine-tune from ``weights``), then profile it.

    Returns the results dict: config, per-epoch history, validation/test metrics, wall time and
    (when ``profile_after``) the trained model's :class:`Profile` under ``"profile"``.
    """
    config = config or TrainConfig(epochs=1)
    net, splits = build(model, data, data_dir=data_dir, weights=weights, seed=config.seed)
    result = fit(net, splits, config, out_dir=out_dir, resume=resume, progress=progress)
    results: dict[str, Any] = {
        "command": "train", "model": model, "data": splits.name,
        "config": config.model_dump(), "train": {
            "history": list(result.history), "val": asdict(result.val),
            "test": asdict(result.test) if result.test is not None else None,
            "epochs_run": result.epochs_run, "wall_time_s": result.wall_time_s,
        },
    }
    if out_dir is not None:
        results["weights"] = str(Path(out_dir) / "model.safetensors")
    if profile_after and is_rank_zero():
        prof = profile(net, splits.example_input(1), name=model, batch_sizes=tuple(batch_sizes),
                       threads=threads, backends=tuple(backends), dataset=splits.test)
        results["profile"] = prof.to_dict()
    return _finish(results, out_dir)


def evaluate_model(model: str, data: str = "fashion_mnist", *, weights: str | None = None,
                   data_dir: str | None = None, split: str = "test", batch_size: int = 512,
                   out_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Accuracy and loss of ``model`` (with ``weights``) on one split of ``data``."""
    from prunekit.errors import ConfigError

    if split not in ("train", "val", "test"):
        raise ConfigError(f"split must be one of train, val, test; got '{split}'.")
    net, splits = build(model, data, data_dir=data_dir, weights=weights)
    metrics = evaluate(net, getattr(splits, split), batch_size=batch_size)
    results = {"command": "eval", "model": model, "data": splits.name, "split": split,
               "weights": weights, "metrics": asdict(metrics)}
    return _finish(results, out_dir)


def profile_model(model: str, data: str | None = None, *, weights: str | None = None,
                  data_dir: str | None = None, in_channels: int | None = None,
                  batch_sizes: Sequence[int] = (1, 64), threads: int = 2,
                  backends: Sequence[str] = DEFAULT_BACKENDS,
                  out_dir: str | os.PathLike[str] | None = None) -> tuple[Profile, dict[str, Any]]:
    """Params, MACs, size, latency (and accuracy when ``data`` is given) of one model."""
    splits: DataSplits | None = None
    if data:
        net, splits = build(model, data, data_dir=data_dir, weights=weights)
    else:
        net = models.create(model, weights=weights, in_channels=in_channels)
    prof = profile(net, _example_input(model, splits, in_channels), name=model,
                   batch_sizes=tuple(batch_sizes), threads=threads, backends=tuple(backends),
                   dataset=splits.test if splits is not None else None)
    results = {"command": "profile", "model": model, "data": splits.name if splits else None,
               "weights": weights, "profile": prof.to_dict(), "table": compare(prof)}
    return prof, _finish(results, out_dir)


def train_baseline(net: nn.Module, splits: DataSplits, config: TrainConfig, epochs: int, *,
                   weights: str | None, progress: bool) -> dict[str, Any] | None:
    """Train ``epochs`` of baseline when no ``weights`` were given; the results.json entry, or None."""
    if weights is not None or epochs <= 0:
        return None
    baseline = fit(net, splits, with_epochs(config, epochs), progress=progress)
    return {"history": list(baseline.history), "wall_time_s": baseline.wall_time_s}


def with_epochs(config: TrainConfig, epochs: int) -> TrainConfig:
    """``config`` with another epoch count (baseline, fine-tune and between-step runs share the rest)."""
    return parse_config(TrainConfig, {**config.model_dump(), "epochs": epochs})


def calibration_batches(splits: DataSplits, count: int, size: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``count`` (inputs, labels) training batches: calibration for data-driven methods."""
    x, y = splits.train.tensors
    return [(x[i:i + size], y[i:i + size]) for i in range(0, min(len(x), count * size), size)]


def _prune_model(net: nn.Module, splits: DataSplits, pruner: StructuredPruner, finetune: TrainConfig,
                 progress: bool) -> tuple[nn.Module, Plan, dict[str, Any], list[dict[str, Any]]]:
    """Prune ``net`` (fine-tuning between steps when there are several); the model and its plan."""
    example, batches = splits.example_input(1), calibration_batches(splits, 4)
    if pruner.steps == 1 or finetune.epochs == 0:
        pruned = pruner.fit_transform(net, example, batches)
        return pruned, pruner.plan_, dict(pruner.achieved_), []
    params = pruner.get_params()

    def between(model: nn.Module, step: int) -> nn.Module:
        fit(model, splits, finetune, progress=progress)
        return model

    params.pop("steps")
    pruned, records = prune_iteratively(net, example, params.pop("target"), steps=pruner.steps,
                                        **params, batches=batches, finetune=between)
    plan = compose([Plan.from_dict(r["plan"]) for r in records])
    steps = [{k: r[k] for k in ("step", "goal", "achieved")} for r in records]
    return pruned, plan, {**records[-1]["achieved"], "channels_removed": plan.ratio}, steps


def prune(model: str, data: str = "fashion_mnist", *, target: Mapping[str, Any],
          importance: str = "l2", scope: str = "local", round_to: int | str = "auto", ignore: Sequence[str] = (),
          steps: int = 1, options: Mapping[str, Any] | None = None, weights: str | None = None,
          baseline_epochs: int = 1, finetune_epochs: int = 1, train_config: TrainConfig | None = None,
          data_dir: str | None = None, out_dir: str | os.PathLike[str] | None = None,
          progress: bool = True, batch_sizes: Sequence[int] = (1, 64), threads: int = 2,
          backends: Sequence[str] = DEFAULT_BACKENDS) -> dict[str, Any]:
    """The source documents' pipeline: baseline, profile, prune, fine-tune, profile again.

    Trains ``baseline_epochs`` when no ``weights`` are given, profiles the dense model (with test
    accuracy), prunes to ``target`` (a :class:`~prunekit.structured.Target` mapping: ``ratio``
    removed, or ``macs``/``params``/``latency`` kept), fine-tunes ``finetune_epochs`` with
    ``train_config`` (default Adam, lr 1e-3) and profiles the result. With ``out_dir`` it writes
    ``results.json`` and the folder ``pruned/`` (``weights.safetensors`` + ``plan.json``: the plan
    against the dense model and the layout), which ``prunekit.load`` reads back.
    """
    config = train_config or TrainConfig()
    pruner = StructuredPruner(dict(target), importance=importance, scope=scope, round_to=round_to,
                              ignore=tuple(ignore), steps=steps, seed=config.seed,
                              options=dict(options) if options else None)
    pruner.validate_params()  # NOTE: a bad option fails before seconds of data loading and training.
    net, splits = build(model, data, data_dir=data_dir, weights=weights, seed=config.seed)
    _precheck(net, splits, pruner)
    results: dict[str, Any] = {"command": "prune", "model": model, "data": splits.name,
                               "weights": weights, "pruner": pruner.get_params()}
    if (baseline := train_baseline(net, splits, config, baseline_epochs, weights=weights, progress=progress)):
        results["baseline"] = baseline
    measure = {"batch_sizes": tuple(batch_sizes), "threads": threads, "backends": tuple(backends),
               "dataset": splits.test}
    before = profile(net, splits.example_input(1), name=model, **measure)
    finetune = with_epochs(config, finetune_epochs)
    pruned, plan, achieved, records = _prune_model(net, splits, pruner, finetune, progress)
    if finetune_epochs > 0:
        tuned = fit(pruned, splits, finetune, progress=progress)
        results["finetune"] = {"history": list(tuned.history), "wall_time_s": tuned.wall_time_s}
    after = profile(pruned, splits.example_input(1), name=f"{model} pruned", **measure)
    architecture = _architecture(model, splits)
    results.update({"before": before.to_dict(), "after": after.to_dict(), "plan": plan.to_dict(),
                    "architecture": architecture,
                    "target": dict(target), "achieved": achieved, "steps": records,
                    "table": compare(before, after)})
    if out_dir is not None and is_rank_zero():
        results["files"] = _save_pruned(pruned, plan, architecture, Path(out_dir))
    return _finish(results, out_dir)


def _precheck(net: nn.Module, splits: DataSplits, pruner: StructuredPruner) -> None:
    """Fail on a misspelt layer name before the baseline is trained, not after."""
    graph = DependencyGraph.trace(net, splits.example_input(1), ignore=tuple(pruner.ignore))
    allocate(graph, {}, 0.0, **{k: v for k, v in pruner.allocate_kwargs().items() if k != "meta"})


def _architecture(model: str, splits: DataSplits) -> dict[str, Any]:
    """What rebuilding the dense model needs: ``prunekit.models.create(**architecture)``."""
    return {"model": model, "num_classes": splits.num_classes, "in_channels": splits.input_shape[0]}


def _save_pruned(pruned: nn.Module, plan: Plan, architecture: dict[str, Any], out: Path) -> dict[str, str]:
    """``out/pruned/`` (weights.safetensors + plan.json, read back by ``prunekit.load``)."""
    folder = save_pruned(pruned, plan, out / "pruned", architecture=architecture)
    return {"pruned": str(folder), "weights": str(folder / WEIGHTS_FILE), "plan": str(folder / RECORD_FILE)}
