"""The reference pipeline's steps as library calls: build, train, evaluate, profile.

Each step takes plain arguments, does its work through the package's own functions, and returns a
JSON-ready results dict (also written to ``out_dir/results.json`` when an ``out_dir`` is given).
The CLI and, later, the recipe runner are thin layers over these functions.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit import data as datasets
from prunekit import models
from prunekit.data import DataSplits
from prunekit.io import save_json
from prunekit.measure import Profile, compare, evaluate, profile
from prunekit.recover import TrainConfig, fit

__all__ = ["build", "train", "evaluate_model", "profile_model", "environment", "is_rank_zero"]


def build(model: str, data: str, *, data_dir: str | None = None, weights: str | None = None,
          seed: int = 0) -> tuple[nn.Module, DataSplits]:
    """Load ``data`` and create ``model`` sized for it (class count and input channels)."""
    models.MODELS.get(model)  # NOTE: a misspelt model name fails before seconds of data loading.
    splits = datasets.load(data, data_dir=data_dir, seed=seed)
    torch.manual_seed(seed)
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
          backends: Sequence[str] = ("torch", "onnxruntime")) -> dict[str, Any]:
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
                  backends: Sequence[str] = ("torch", "onnxruntime"),
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
