"""The ``sensitivity`` workflow: a (trained) model and data in, ``OUT/sensitivity.json`` out.

:func:`proxy_for` builds the :class:`~prunekit.search.Proxy` that ``search`` shares: BatchNorm
re-estimated on the first training batches, the metric on the first ``val_samples`` of the
validation split (fixed, so every candidate is scored on the same samples).
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.data import DataSplits
from prunekit.errors import ConfigError
from prunekit.io import save_json
from prunekit.recover import TrainConfig
from prunekit.search import SENSITIVITY_FILE, Proxy
from prunekit.search import sensitivity as run_sensitivity
from prunekit.search.sensitivity import DEFAULT_RATIOS
from prunekit.workflows.common import (Data, Model, build, example_of, finish_with_report, is_rank_zero, name_of,
                                       spec_of, starts_trained, task_of, with_teacher)
from prunekit.workflows.train import train_baseline

__all__ = ["sensitivity", "sensitivity_of", "proxy_for", "default_cache_dir"]


def default_cache_dir() -> Path:
    """``$PRUNEKIT_CACHE/sensitivity``, else ``~/.cache/prunekit/sensitivity``."""
    root = os.environ.get("PRUNEKIT_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "prunekit") / "sensitivity"


def proxy_for(splits: Any, task: Any, *, bn_batches: int = 2, val_samples: int = 1024, batch_size: int = 128,
              finetune_steps: int = 0) -> Proxy:
    """The proxy on ``splits``: ``bn_batches`` training batches of ``batch_size`` re-estimate
    BatchNorm (and fine-tune, with ``finetune_steps``), the first ``val_samples`` validation samples score.
    With the user's own loaders (:class:`~prunekit.data.Loaders`) the batches are the loaders' own, at
    their batch size, and the last validation batch is cut to end at ``val_samples``."""
    if bn_batches < 0 or val_samples < 1 or batch_size < 1:
        raise ConfigError(f"proxy: bn_batches must be >= 0, val_samples and batch_size >= 1; got {bn_batches}, "
                          f"{val_samples}, {batch_size}. Pass e.g. --bn-batches 2 --val-samples 1024.")
    count = max(bn_batches, min(finetune_steps, 16), 1)
    if isinstance(splits, DataSplits):
        x, y = splits.train.tensors
        calibration = [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, min(len(x), count * batch_size),
                                                                                   batch_size)]
        vx, vy = splits.val.tensors
        n = min(len(vx), val_samples)
        validation = [(vx[i:min(i + 512, n)], vy[i:min(i + 512, n)]) for i in range(0, n, 512)]
    else:
        calibration = list(itertools.islice(iter(splits.train), count))
        validation = _first_samples(splits.val, val_samples)
    return Proxy(task, calibration, validation, bn_batches=bn_batches, finetune_steps=finetune_steps)


def _first_samples(loader: Any, samples: int) -> list[Any]:
    """The batches of ``loader`` holding its first ``samples`` samples, the last one cut short; a batch
    whose size cannot be read (no tensor in it) counts as the loader's ``batch_size`` (else 1), whole."""
    batches: list[Any] = []
    seen = 0
    for batch in loader:
        if seen >= samples:
            break
        size = _batch_len(batch)
        if size is None:
            size = int(getattr(loader, "batch_size", None) or 1)
        elif seen + size > samples:
            batch = _head(batch, size, samples - seen)
        batches.append(batch)
        seen += size
    return batches


def _batch_len(batch: Any) -> int | None:
    """The leading size of the first tensor in ``batch`` (a tensor, or tuples, lists and mappings of them)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else None
    items = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (tuple, list)) else ()
    for item in items:
        if (size := _batch_len(item)) is not None:
            return size
    return None


def _head(batch: Any, size: int, n: int) -> Any:
    """``batch`` with every tensor of leading size ``size`` cut to its first ``n`` rows (the rest as is)."""
    if isinstance(batch, torch.Tensor):
        return batch[:n] if batch.dim() and batch.shape[0] == size else batch
    if isinstance(batch, Mapping):
        return {k: _head(v, size, n) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # NOTE: a named tuple takes its fields by position
        return type(batch)(*(_head(v, size, n) for v in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(_head(v, size, n) for v in batch)
    return batch


def _printer(enabled: bool) -> Any:
    if not enabled:
        return None

    def show(what: str, done: int, total: int) -> None:
        print(f"\rsensitivity {done}/{total} {what[:40]:<40}", end="" if done < total else "\n",
              file=sys.stderr, flush=True)
    return show


def sensitivity_of(net: nn.Module, splits: Any, task: Any, *, ratios: Sequence[float] = DEFAULT_RATIOS,
                   importance: str = "l2", depth: bool = True, bn_batches: int = 2, val_samples: int = 1024,
                   cache_dir: str | os.PathLike[str] | None = None, progress: bool = False,
                   ranks: bool | str | Sequence[str] = False) -> dict[str, Any]:
    """:func:`prunekit.search.sensitivity` of ``net`` on ``splits`` (what the recipe stage shares)."""
    proxy = proxy_for(splits, task, bn_batches=bn_batches, val_samples=val_samples)
    return run_sensitivity(net, example_of(splits, task), proxy, ratios=ratios, importance=importance,
                           depth=depth, cache_dir=cache_dir, progress=_printer(progress), ranks=ranks)


def sensitivity(model: Model, data: Data = "fashion_mnist", *, weights: str | None = None, task: Any = None,
                data_dir: str | None = None,
                tokenizer: str | None = None, block_size: int | None = None,
                image_size: int | tuple[int, int] | None = None,
                ratios: Sequence[float] = DEFAULT_RATIOS, importance: str = "l2",
                depth: bool = True, bn_batches: int = 2, val_samples: int = 1024, baseline_epochs: int = 1,
                train_config: TrainConfig | None = None, cache_dir: str | os.PathLike[str] | None = None,
                out_dir: str | os.PathLike[str] | None = None, progress: bool = False,
                device: str | torch.device | None = None, ranks: bool | str | Sequence[str] = False) -> dict[str, Any]:
    """Baseline (or ``weights``), then the proxy metric per group and ratio (and per residual
    block); with ``out_dir`` writes ``sensitivity.json`` (shape: :mod:`prunekit.search.sensitivity`)
    and ``results.json``. ``cache_dir`` None uses :func:`default_cache_dir`. ``model`` may be the
    user's own (trained) ``nn.Module``, as in the other workflows: a copy is analysed, with no baseline."""
    config = train_config or TrainConfig()
    net, splits = build(model, data, data_dir=data_dir, weights=weights, task=task, seed=config.seed,
                         tokenizer=tokenizer, block_size=block_size, image_size=image_size)
    spec = spec_of(model)
    task_obj = with_teacher(task_of(splits, task), net, spec)
    results: dict[str, Any] = {"command": "sensitivity", "model": name_of(model), "data": splits.name,
                               "weights": weights}
    if (baseline := train_baseline(net, splits, config, baseline_epochs, trained=starts_trained(spec, weights),
                                   progress=progress, device=device, task=task_obj)):
        results["baseline_training"] = baseline
    net = net.cpu()
    found = sensitivity_of(net, splits, task_obj, ratios=ratios, importance=importance, depth=depth,
                           bn_batches=bn_batches, val_samples=val_samples, ranks=ranks,
                           cache_dir=cache_dir if cache_dir is not None else default_cache_dir(), progress=progress)
    results["sensitivity"] = found
    if out_dir is not None and is_rank_zero():
        results["sensitivity_file"] = str(save_json(found, Path(out_dir) / SENSITIVITY_FILE))
    return finish_with_report(results, out_dir)
