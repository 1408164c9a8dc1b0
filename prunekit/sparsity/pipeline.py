"""`prunekit sparsify` as one library call: baseline, profile, sparsify, fine-tune, profile, save.

Methods: the Sparsifier's importance (``magnitude``, ``random``, ``taylor``, ``movement``), one-shot
or ramped by a schedule during fine-tuning, and the calibration methods ``wanda`` / ``sparsegpt``
(:mod:`prunekit.sparsity.oneshot`, one-shot only). Fine-tuning always keeps the zeros: the weights
train under masks, which are finalized into plain zeros at the end.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from torch import nn

from prunekit.data import DataSplits
from prunekit.data.base import make_loader
from prunekit.errors import ConfigError, did_you_mean
from prunekit.measure import compare, count_nonzero, profile
from prunekit.measure.latency import DEFAULT_BACKENDS
from prunekit.recover import TrainConfig, fit
from prunekit.sparsity import masks as masking
from prunekit.sparsity.callback import SparsityCallback
from prunekit.sparsity.importance import IMPORTANCE
from prunekit.sparsity.patterns import Pattern, check_layer
from prunekit.sparsity.report import LayerSparsity, sparsity_report, total_sparsity
from prunekit.sparsity.sparsifier import Sparsifier, select_targets
from prunekit.sparsity.storage import save_sparse, sparse_sizes

__all__ = ["sparsify", "sparsify_model", "CALIBRATION_METHODS", "SCHEDULE_CHOICES", "SPARSE_FILE", "LATENCY_NOTE"]

CALIBRATION_METHODS = ("wanda", "sparsegpt")
SCHEDULE_CHOICES = ("one_shot", "gradual", "iterative")
SPARSE_FILE = "sparse.safetensors"
LATENCY_NOTE = ("Zeros in weights give no speed-up in PyTorch's dense kernels: the sparse model runs "
                "the same dense GEMMs, so its latency is expected to match the dense one. The gain "
                "is on disk (sparse format) and on hardware/kernels for the pattern (2:4 on GPUs).")


def _check(method: str, schedule: str, finetune_epochs: int, ramp: float, updates: int) -> None:
    methods = [*IMPORTANCE.names(), *CALIBRATION_METHODS]
    if method not in methods:
        raise ConfigError(f"sparsify: unknown method '{method}'.{did_you_mean(method, methods)} "
                          f"Choose one of {', '.join(methods)}.")
    if schedule not in SCHEDULE_CHOICES:
        raise ConfigError(f"sparsify: 'schedule' must be one of {', '.join(SCHEDULE_CHOICES)}; got "
                          f"'{schedule}'.{did_you_mean(schedule, SCHEDULE_CHOICES)}")
    if schedule != "one_shot" and method in CALIBRATION_METHODS:
        raise ConfigError(f"sparsify: method '{method}' prunes in one shot from calibration data; "
                          f"schedule '{schedule}' needs an importance the loop can re-apply. Use "
                          f"--schedule one_shot with {method}, or --method magnitude.")
    if schedule != "one_shot" and finetune_epochs < 1:
        raise ConfigError(f"sparsify: schedule '{schedule}' prunes during fine-tuning, but "
                          f"finetune_epochs is {finetune_epochs}. Pass --finetune-epochs N (N >= 1).")
    if not 0.0 < ramp <= 1.0 or updates < 1:
        raise ConfigError(f"sparsify: 'ramp' must be in (0, 1] and 'updates' >= 1; got ramp {ramp}, "
                          f"updates {updates}. E.g. ramp 0.75 prunes over the first 3/4 of fine-tuning.")


def _schedule(kind: str, total_steps: int, ramp: float, updates: int) -> dict[str, Any]:
    """The schedule mapping: prune over the first ``ramp`` of fine-tuning, then recover."""
    end = max(1, int(round(ramp * total_steps)) - 1)
    if kind == "gradual":
        return {"name": "gradual", "start": 0, "end": end, "frequency": max(1, end // updates)}
    if kind == "iterative":
        count = min(updates, end + 1)
        return {"name": "iterative",
                "milestones": sorted({round(k * end / max(count - 1, 1)) for k in range(count)})}
    return {"name": "one_shot"}


def _steps_per_epoch(splits: DataSplits, config: TrainConfig) -> int:
    steps = len(make_loader(splits.train, batch_size=config.batch_size, shuffle=True, seed=config.seed))
    return min(steps, config.max_steps_per_epoch or steps)


def _sparsify_with_importance(net: nn.Module, splits: DataSplits, sparsifier: Sparsifier,
                             finetune: TrainConfig, calibration: list, progress: bool,
                             ramped: bool) -> tuple[list[LayerSparsity], dict[str, Any] | None]:
    """Masks from the Sparsifier, one-shot (then fine-tune under them) or ramped during fine-tuning."""
    sparsifier.prepare(net)
    if not ramped:
        if sparsifier.needs_gradients_:
            sparsifier.accumulate(calibration, progress=progress)
        sparsifier.apply()
    tuned = None
    if finetune.epochs > 0:
        callbacks = [SparsityCallback(sparsifier)] if ramped else []
        tuned = fit(net, splits, finetune, progress=progress, callbacks=callbacks)
    rows = sparsifier.sparsity_report()
    sparsifier.finalize()
    return rows, tuned and {"history": list(tuned.history), "wall_time_s": tuned.wall_time_s}


def _sparsify_with_calibration(net: nn.Module, splits: DataSplits, method: str, sparsity: float,
                               pattern: Pattern, ignore: Sequence[str], finetune: TrainConfig,
                               calibration: list, progress: bool
                               ) -> tuple[nn.Module, list[LayerSparsity], dict[str, Any] | None]:
    """Wanda / SparseGPT in one shot, then fine-tuning with their zeros held by masks."""
    from prunekit.sparsity.oneshot import one_shot  # NOTE: lazy: the one-shot code is optional here.

    result = one_shot(net, calibration, method=method, sparsity=sparsity, pattern=pattern,
                      ignore=list(ignore), progress=progress, inplace=False)
    sparse = result.model
    names = [f"{layer.name}.weight" for layer in result.layers]
    tuned = None
    if finetune.epochs > 0:
        masking.attach(sparse, {n: sparse.get_parameter(n).detach() != 0 for n in names})
        tuned = fit(sparse, splits, finetune, progress=progress)
        masking.finalize(sparse)
    rows = sparsity_report(sparse, names)
    return sparse, rows, tuned and {"history": list(tuned.history), "wall_time_s": tuned.wall_time_s}


def sparsify_model(net: nn.Module, splits: DataSplits, *, method: str = "magnitude",
                   sparsity: float | None = 0.5, pattern: str | Pattern = "unstructured", scope: str = "layer",
                   schedule: str = "one_shot", ignore: Sequence[str] = (), finetune: TrainConfig | None = None,
                   ramp: float = 0.75, updates: int = 20, calibration_batches: int = 8,
                   progress: bool = True) -> tuple[nn.Module, list[LayerSparsity], dict[str, Any]]:
    """Sparsify an in-memory model on ``splits`` and fine-tune under the masks (the recipe stage).

    Returns ``(model, per-layer report, info)``: the model holds plain zeros (masks finalized); it is
    ``net`` itself for the importance methods and a new module for wanda/sparsegpt. ``info`` has the
    target sparsity, the schedule in steps and the fine-tune history.
    """
    finetune = finetune or TrainConfig(epochs=0)
    _check(method, schedule, finetune.epochs, ramp, updates)
    parsed = Pattern.parse(pattern)
    sparsifier = Sparsifier(sparsity, pattern=parsed, importance=method if method in IMPORTANCE else "magnitude",
                            scope=scope, schedule=_schedule(schedule, 100, ramp, updates),
                            ignore=tuple(ignore), seed=finetune.seed)
    _, target, _ = sparsifier.validate_params()
    if method in CALIBRATION_METHODS and scope != "layer":
        raise ConfigError(f"sparsify: method '{method}' prunes each layer to the same sparsity; "
                          f"scope '{scope}' is only for the importance methods. Use scope 'layer'.")
    for name in select_targets(net, None, tuple(ignore)):
        check_layer(name, tuple(net.get_parameter(name).shape), parsed)
    from prunekit.pipeline import calibration_batches as first_batches

    calibration = first_batches(splits, calibration_batches)
    info: dict[str, Any] = {"sparsity": target, "pattern": str(parsed), "method": method}
    if method in CALIBRATION_METHODS:
        net, rows, tuned = _sparsify_with_calibration(net, splits, method, target, parsed, ignore,
                                                      finetune, calibration, progress)
    else:
        plan = _schedule(schedule, finetune.epochs * _steps_per_epoch(splits, finetune), ramp, updates)
        sparsifier.schedule = plan
        info["schedule_steps"] = plan
        rows, tuned = _sparsify_with_importance(net, splits, sparsifier, finetune, calibration,
                                               progress, ramped=schedule != "one_shot")
    info["finetune"] = tuned
    info["achieved_sparsity"] = total_sparsity(rows)
    return net, rows, info


def sparsify(model: str, data: str = "fashion_mnist", *, method: str = "magnitude",
             sparsity: float | None = 0.5, pattern: str = "unstructured", scope: str = "layer",
             schedule: str = "one_shot", ignore: Sequence[str] = (), weights: str | None = None,
             baseline_epochs: int = 1, finetune_epochs: int = 1, train_config: TrainConfig | None = None,
             ramp: float = 0.75, updates: int = 20, calibration_batches: int = 8,
             data_dir: str | None = None, out_dir: str | os.PathLike[str] | None = None,
             progress: bool = True, batch_sizes: Sequence[int] = (1, 64), threads: int = 2,
             backends: Sequence[str] = DEFAULT_BACKENDS) -> dict[str, Any]:
    """Baseline (or ``weights``), profile, sparsify, fine-tune under the masks, profile, save.

    ``schedule="gradual"`` (Zhu & Gupta's cubic) or ``"iterative"`` ramps the sparsity over the
    first ``ramp`` fraction of the ``finetune_epochs`` in ``updates`` mask updates, then trains at
    the target; ``"one_shot"`` prunes before fine-tuning. Every Conv/Linear weight but the
    classifier is sparsified, minus ``ignore``. With ``out_dir``: ``results.json`` and
    ``sparse.safetensors`` (read back by :func:`prunekit.sparsity.load_sparse`).
    """
    from prunekit.pipeline import _architecture, _finish, build, is_rank_zero, train_baseline, with_epochs

    _check(method, schedule, finetune_epochs, ramp, updates)
    parsed = Pattern.parse(pattern)
    config = train_config or TrainConfig()
    sparsifier = Sparsifier(sparsity, pattern=parsed, importance=method if method in IMPORTANCE else "magnitude",
                            scope=scope, schedule=_schedule(schedule, 100, ramp, updates),
                            ignore=tuple(ignore), seed=config.seed)
    _, target, _ = sparsifier.validate_params()  # NOTE: bad options fail before data and training.
    if method in CALIBRATION_METHODS and scope != "layer":
        raise ConfigError(f"sparsify: method '{method}' prunes each layer to the same sparsity; "
                          f"scope '{scope}' is only for the importance methods. Use --scope layer.")
    net, splits = build(model, data, data_dir=data_dir, weights=weights, seed=config.seed)
    for name in select_targets(net, None, tuple(ignore)):  # NOTE: fail before the baseline trains.
        check_layer(name, tuple(net.get_parameter(name).shape), parsed)
    results: dict[str, Any] = {"command": "sparsify", "model": model, "data": splits.name,
                               "weights": weights, "method": method, "sparsity": target,
                               "pattern": str(parsed), "scope": scope, "schedule": schedule}
    if (baseline := train_baseline(net, splits, config, baseline_epochs, weights=weights, progress=progress)):
        results["baseline"] = baseline
    measure = {"batch_sizes": tuple(batch_sizes), "threads": threads, "backends": tuple(backends),
               "dataset": splits.test}
    before = profile(net, splits.example_input(1), name=model, **measure)
    dense_nonzero = count_nonzero(net)
    finetune = with_epochs(config, finetune_epochs)
    net, rows, info = sparsify_model(net, splits, method=method, sparsity=sparsity, pattern=parsed,
                                     scope=scope, schedule=schedule, ignore=ignore, finetune=finetune,
                                     ramp=ramp, updates=updates, calibration_batches=calibration_batches,
                                     progress=progress)
    if "schedule_steps" in info:
        results["schedule_steps"] = info["schedule_steps"]
    if info["finetune"] is not None:
        results["finetune"] = info["finetune"]
    after = profile(net, splits.example_input(1), name=f"{model} sparse", **measure)
    sizes = sparse_sizes(net)
    results.update({
        "before": before.to_dict(), "after": after.to_dict(), "architecture": _architecture(model, splits),
        "layers": [asdict(r) | {"sparsity": r.sparsity} for r in rows],
        "achieved_sparsity": total_sparsity(rows),
        "nonzero_params": {"before": dense_nonzero, "after": count_nonzero(net)},
        "sizes": asdict(sizes), "latency_note": LATENCY_NOTE,
    })
    results["table"] = compare(before, after) + "\n" + _sparse_lines(results)
    if out_dir is not None and is_rank_zero():
        file = save_sparse(net, Path(out_dir) / SPARSE_FILE,
                           metadata={"model": model, "architecture": str(results["architecture"])})
        results["files"] = {"sparse_weights": str(file)}
    return _finish(results, out_dir)


def _sparse_lines(results: Mapping[str, Any]) -> str:
    """The rows ``compare`` does not know: sparsity, non-zeros and the sparse file size."""
    sizes, nonzero = results["sizes"], results["nonzero_params"]
    return "\n".join([
        f"sparsity of the sparsified layers: {100 * results['achieved_sparsity']:.2f} % "
        f"({results['pattern']}, {results['method']}, {results['scope']} scope)",
        f"non-zero parameters: {nonzero['before']:,} -> {nonzero['after']:,}",
        f"size on disk: dense safetensors {sizes['dense'] / 1e3:.1f} KB "
        f"(deflate {sizes['dense_compressed'] / 1e3:.1f} KB) -> sparse format "
        f"{sizes['sparse'] / 1e3:.1f} KB (deflate {sizes['sparse_compressed'] / 1e3:.1f} KB), "
        f"{sizes['dense'] / sizes['sparse']:.2f}x smaller",
        f"note: {LATENCY_NOTE}",
    ])
