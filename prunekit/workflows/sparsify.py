"""The ``sparsify`` workflow: baseline, profile, sparsify, fine-tune under the masks, profile, save.

Weights are scored by an ``importance`` (``magnitude``, ``random``, ``taylor``, ``movement``:
masks set in one shot or ramped by a schedule during fine-tuning), or zeroed by a calibration
``method`` (``wanda`` / ``sparsegpt``, :mod:`prunekit.sparsity.oneshot`, one-shot only).
Fine-tuning always keeps the zeros: the weights train under masks, which are finalized into
plain zeros at the end. :func:`sparsify_model` is the step a recipe's ``sparsify`` stage shares.
"""

from __future__ import annotations

import copy
import dataclasses

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from prunekit.data import DataSplits
from prunekit.data.base import make_loader
from prunekit.errors import ConfigError, did_you_mean
from prunekit.measure import compare, count_nonzero
from prunekit.recover import TrainConfig
from prunekit.sparsity import masks as masking
from prunekit.sparsity.callback import SparsityCallback
from prunekit.sparsity.importance import IMPORTANCE
from prunekit.sparsity.patterns import Pattern, check_layer
from prunekit.sparsity.report import LayerSparsity, sparsity_report, total_sparsity
from prunekit.sparsity.sparsifier import Sparsifier, select_targets
from prunekit.sparsity.storage import SparseSizes, sparse_sizes
from prunekit.workflows import common
from prunekit.workflows.common import (
    Data,
    Measure,
    Model,
    architecture_of,
    build,
    capped_splits,
    check_device,
    eval_data,
    example_of,
    evidence_of,
    finish_with_report,
    wants_evidence,
    measure_profile,
    name_of,
    save_result,
    staged,
    spec_of,
    starts_trained,
    task_of,
    with_teacher,
)
from prunekit.workflows.inputs import check_labels
from prunekit.workflows.train import fine_tune, history, train_baseline, with_epochs

__all__ = ["LATENCY_NOTE", "METHODS", "SCHEDULE_CHOICES", "sparsify", "sparsify_model"]

METHODS = ("wanda", "sparsegpt")
SCHEDULE_CHOICES = ("one_shot", "gradual", "iterative")
LATENCY_NOTE = ("Zeros in weights give no speed-up in PyTorch's dense kernels: the sparse model runs "
                "the same dense GEMMs, so its latency is expected to match the dense one. The gain "
                "is on disk (sparse format) and on hardware/kernels for the pattern (2:4 on GPUs).")


def _check(importance: str, method: str | None, schedule: str, finetune_epochs: int, ramp: float,
           updates: int) -> None:
    if importance not in IMPORTANCE.names():
        raise ConfigError(f"sparsify: unknown importance '{importance}'."
                          f"{did_you_mean(importance, IMPORTANCE.names())} Choose one of "
                          f"{', '.join(IMPORTANCE.names())}.")
    if method is not None and method not in METHODS:
        raise ConfigError(f"sparsify: unknown method '{method}'.{did_you_mean(method, METHODS)} "
                          f"Choose one of {', '.join(METHODS)}, or none for masks from the importance.")
    if schedule not in SCHEDULE_CHOICES:
        raise ConfigError(f"sparsify: 'schedule' must be one of {', '.join(SCHEDULE_CHOICES)}; got "
                          f"'{schedule}'.{did_you_mean(schedule, SCHEDULE_CHOICES)}")
    if schedule != "one_shot" and method is not None:
        raise ConfigError(f"sparsify: method '{method}' prunes in one shot from calibration data; "
                          f"schedule '{schedule}' needs an importance the loop can re-apply. Use "
                          f"--schedule one_shot with {method}, or leave --method out.")
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


def _steps_per_epoch(splits: Any, config: TrainConfig) -> int:
    """Optimizer steps in one fine-tuning epoch (image data: batches of ``batch_size``; other data:
    its training loader's length, 1 when it has none)."""
    if isinstance(splits, DataSplits):
        steps = len(make_loader(splits.train, batch_size=config.batch_size, shuffle=True, seed=config.seed))
    else:
        try:
            steps = len(splits.train)
        except TypeError:  # NOTE: an iterable without a length: the cap, else one step an epoch.
            steps = config.max_steps_per_epoch or 1
    return min(steps, config.max_steps_per_epoch or steps)


def check_fits(splits: Any, task: Any, *, importance: str = "magnitude", method: str | None = None,
               schedule: str = "one_shot") -> None:
    """Refuse, before any training, a one-shot importance scored by gradients of a labelled loss on
    data without labels (a ramped schedule takes its gradients from fine-tuning, with the task's loss)."""
    needs = method is None and schedule == "one_shot" and importance in IMPORTANCE.names() \
        and bool(IMPORTANCE.get(importance).meta.get("needs_gradients"))
    check_labels("sparsify", importance, needs, splits, task,
                 "Use importance magnitude, a calibration method (wanda, sparsegpt: no labels needed), "
                 "or schedule gradual (gradients from fine-tuning).")


def _with_importance(net: nn.Module, splits: Any, sparsifier: Sparsifier, finetune: TrainConfig,
                     calibration: list, example: Any, *, progress: bool, ramped: bool,
                     device: str | torch.device | None, task: Any
                     ) -> tuple[list[LayerSparsity], dict[str, Any] | None, list[str]]:
    """Masks from the Sparsifier, one-shot (then fine-tune under them) or ramped during fine-tuning;
    ``example`` (model inputs) lets it find the classifier by the forward's call order."""
    sparsifier.prepare(net, example)
    if not ramped:
        if sparsifier.needs_gradients_:
            sparsifier.accumulate(calibration, progress=progress)
        sparsifier.apply()
    tuned = None
    if finetune.epochs > 0:
        callbacks = [SparsityCallback(sparsifier)] if ramped else []
        tuned = fine_tune(net, splits, finetune, progress=progress, callbacks=callbacks, device=device,
                          task=task)
    rows, skipped = sparsifier.sparsity_report(), list(sparsifier.skipped_)
    sparsifier.finalize()
    return rows, history(tuned) if tuned is not None else None, skipped


def _unheld(net: nn.Module, sparse: nn.Module, names: Sequence[str]) -> list[str]:
    """Put back ``net``'s dense weights in the layers of ``sparse`` among ``names`` whose weight is
    computed by a parametrization (weight_norm): masks hold zeros in plain weights only, so fine-tuning
    would regrow theirs. Returns them as ``"name: reason"``."""
    left = []
    with torch.no_grad():
        for name in names:
            module = sparse.get_submodule(name)
            if not parametrize.is_parametrized(module, "weight"):
                continue
            dense = dict(net.get_submodule(name).named_parameters())
            for key, param in module.named_parameters():
                param.copy_(dense[key])
            chain: Any = module.parametrizations["weight"]  # NOTE: typed Tensor | Module by nn.Module
            kinds = ", ".join(type(p).__name__ for p in chain)
            left.append(f"{name}: its weight is computed by a parametrization ({kinds}), so masks cannot hold its "
                        "zeros while fine-tuning (remove it with torch.nn.utils.parametrize."
                        "remove_parametrizations, or fine-tune 0 epochs to keep it pruned)")
    return left


def _with_calibration(net: nn.Module, splits: Any, method: str, sparsity: float, pattern: Pattern,
                      ignore: Sequence[str], finetune: TrainConfig, calibration: list, *, progress: bool,
                      device: str | torch.device | None, task: Any
                      ) -> tuple[nn.Module, list[LayerSparsity], dict[str, Any] | None, list[str]]:
    """Wanda / SparseGPT in one shot, then fine-tuning with their zeros held by masks; a pruned layer
    whose weight a parametrization computes is left dense when fine-tuning follows (with a warning)."""
    from prunekit.sparsity.oneshot import (
        one_shot,  # NOTE: lazy: the one-shot code is optional here.
    )

    result = one_shot(net, calibration, method=method, sparsity=sparsity, pattern=pattern,
                      ignore=list(ignore), progress=progress, inplace=False)
    sparse, skipped = result.model, list(result.skipped)
    pruned = [layer.name for layer in result.layers]
    tuned = None
    if finetune.epochs > 0:
        if left := _unheld(net, sparse, pruned):
            warnings.warn(f"sparsify: {len(left)} layer(s) left dense: {'; '.join(left)}", stacklevel=3)
            skipped += left
            pruned = [n for n in pruned if n not in {s.split(":")[0] for s in left}]
        names = [f"{n}.weight" for n in pruned]
        masking.attach(sparse, {n: sparse.get_parameter(n).detach() != 0 for n in names})
        tuned = fine_tune(sparse, splits, finetune, progress=progress, device=device, task=task)
        masking.finalize(sparse)
    rows = sparsity_report(sparse, [f"{n}.weight" for n in pruned])
    return sparse, rows, history(tuned) if tuned is not None else None, skipped


def _sparsifier(*, importance: str = "magnitude", method: str | None = None, sparsity: float | None = 0.5,
                pattern: str | Pattern = "unstructured", scope: str = "layer", schedule: str = "one_shot",
                ignore: Sequence[str] = (), ramp: float = 0.75, updates: int = 20, seed: int = 0,
                finetune_epochs: int = 0) -> tuple[Sparsifier, Pattern, float]:
    """The validated Sparsifier of a stage, its pattern and target sparsity (no model needed)."""
    _check(importance, method, schedule, finetune_epochs, ramp, updates)
    parsed = Pattern.parse(pattern)
    sparsifier = Sparsifier(sparsity, pattern=parsed, importance=importance, scope=scope,
                            schedule=_schedule(schedule, 100, ramp, updates), ignore=tuple(ignore),
                            seed=seed)
    _, target, _ = sparsifier.validate_params()
    if method is not None and scope != "layer":
        raise ConfigError(f"sparsify: method '{method}' prunes each layer to the same sparsity; "
                          f"scope '{scope}' is only for masks from an importance. Use scope 'layer'.")
    return sparsifier, parsed, target


def _check_layers(net: nn.Module, ignore: Sequence[str], pattern: Pattern, example: Any) -> None:
    """Every layer to sparsify fits the pattern (fails before any training); ``example`` (model inputs)
    finds the classifier, left dense, by the forward's call order."""
    for name in select_targets(net, None, tuple(ignore), example):
        check_layer(name, tuple(net.get_parameter(name).shape), pattern)


def sparsify_model(net: nn.Module, splits: Any, *, importance: str = "magnitude",
                   method: str | None = None, sparsity: float | None = 0.5,
                   pattern: str | Pattern = "unstructured", scope: str = "layer", schedule: str = "one_shot",
                   ignore: Sequence[str] = (), ramp: float = 0.75, updates: int = 20,
                   calibration_batches: int = 8, finetune: TrainConfig | None = None,
                   progress: bool = False, device: str | torch.device | None = None, task: Any = None,
                   example_inputs: Any = None) -> tuple[nn.Module, list[LayerSparsity], dict[str, Any]]:
    """Sparsify an in-memory model on ``splits`` (image DataSplits or Loaders) and fine-tune under the
    masks with ``task``'s loss (default: what the data fits) (the recipe stage).

    The classifier, left dense, is the last Linear/Conv the forward calls on ``example_inputs``
    (default: the data's first input).
    Returns ``(model, per-layer report, info)``: the model holds plain zeros (masks finalized); it is
    ``net`` itself for masks from an ``importance`` and a new module for a calibration ``method``.
    ``info`` has the target sparsity, the schedule in steps, the fine-tune history and the selected
    layers left dense (``skipped``, ``"name: reason"``).
    """
    finetune = finetune or TrainConfig(epochs=0)
    sparsifier, parsed, target = _sparsifier(
        importance=importance, method=method, sparsity=sparsity, pattern=pattern, scope=scope,
        schedule=schedule, ignore=ignore, ramp=ramp, updates=updates, seed=finetune.seed,
        finetune_epochs=finetune.epochs)
    task = task_of(splits, task)
    check_fits(splits, task, importance=importance, method=method, schedule=schedule)
    example = example_inputs if example_inputs is not None else example_of(splits, task)
    _check_layers(net, ignore, parsed, example)
    calibration = common.calibration_batches(splits, calibration_batches, task=task)
    info: dict[str, Any] = {"sparsity": target, "pattern": str(parsed), "importance": importance,
                            "method": method}
    if method is not None:
        net, rows, tuned, skipped = _with_calibration(net, splits, method, target, parsed, ignore, finetune,
                                                      calibration, progress=progress, device=device, task=task)
    else:
        plan = _schedule(schedule, finetune.epochs * _steps_per_epoch(splits, finetune), ramp, updates)
        sparsifier.schedule = plan
        info["schedule_steps"] = plan
        rows, tuned, skipped = _with_importance(net, splits, sparsifier, finetune, calibration, example,
                                                progress=progress, ramped=schedule != "one_shot", device=device,
                                                task=task)
    info["finetune"] = tuned
    info["skipped"] = skipped
    info["achieved_sparsity"] = total_sparsity(rows)
    return net, rows, info


def sparsify(model: Model, data: Data = "fashion_mnist", *, stage: Mapping[str, Any],
             weights: str | None = None, baseline_epochs: int = 1, finetune_epochs: int = 1,
             train_config: TrainConfig | None = None, data_dir: str | None = None,
             tokenizer: str | None = None, block_size: int | None = None,
             image_size: int | tuple[int, int] | None = None,
             out_dir: str | os.PathLike[str] | None = None, progress: bool = False,
             measure: Measure | None = None, device: str | torch.device | None = None,
             task: str | None = None) -> dict[str, Any]:
    """Baseline (or ``weights``), profile, sparsify, fine-tune under the masks, profile, save.

    ``stage`` holds :func:`sparsify_model`'s options, the keys of a recipe's ``sparsify`` stage
    (``importance``, ``method``, ``sparsity``, ``pattern``, ``scope``, ``schedule``, ``ignore``,
    ``ramp``, ``updates``, ``calibration_batches``). ``schedule="gradual"`` (Zhu & Gupta's cubic)
    or ``"iterative"`` ramps the sparsity over the first ``ramp`` fraction of the
    ``finetune_epochs`` in ``updates`` mask updates; ``"one_shot"`` prunes before fine-tuning.
    Every Conv/Linear weight but the classifier (the last one the forward calls) is sparsified,
    minus ``ignore``; ``results["skipped"]`` lists the layers left dense and why. With ``out_dir``:
    ``results.json`` and ``model/`` (stored sparse, a Hugging Face model as a save_pretrained folder;
    ``prunekit.load`` reads it back dense).
    ``task`` says what the metric and loss are (default: what the data fits).

    ``model`` may be the user's own trained ``nn.Module`` (never changed; no baseline is trained) and
    ``data`` a :class:`~prunekit.data.DataSplits` or :class:`~prunekit.data.Loaders` of their
    DataLoaders; the folder then loads with ``prunekit.load(out / "model", model=the_dense_module)``.
    """
    options = dict(stage)
    config = train_config or TrainConfig()
    measure = measure or Measure()
    checks = {k: v for k, v in options.items() if k != "calibration_batches"}
    _, parsed, target = _sparsifier(**checks, seed=config.seed, finetune_epochs=finetune_epochs)
    check_device(device)  # NOTE: bad options fail before data and training.
    net, splits = build(model, data, data_dir=data_dir, weights=weights, task=task, seed=config.seed,
                         tokenizer=tokenizer, block_size=block_size, image_size=image_size)
    spec, name = spec_of(model), name_of(model)
    splits, scorer = capped_splits(splits, measure), with_teacher(task_of(splits, task), net, spec)
    # NOTE: fail before the baseline trains.
    check_fits(splits, scorer, **{k: options[k] for k in ("importance", "method", "schedule") if k in options})
    example = example_of(splits, scorer)
    _check_layers(net, options.get("ignore", ()), parsed, example)
    results: dict[str, Any] = {"command": "sparsify", "model": name, "data": splits.name, "task": scorer.name,
                               "weights": weights, "importance": options.get("importance", "magnitude"),
                               "method": options.get("method"), "sparsity": target, "pattern": str(parsed),
                               "scope": options.get("scope", "layer"),
                               "schedule": options.get("schedule", "one_shot")}
    if (baseline := train_baseline(net, splits, config, baseline_epochs, trained=starts_trained(spec, weights),
                                   progress=progress, device=device, task=scorer)):
        results["baseline"] = baseline
    before = measure_profile(net, example, name, measure, eval_data(splits), scorer)
    dense_nonzero = count_nonzero(net)
    # NOTE: for the report, and the module a user's own model's folder is saved against
    dense = copy.deepcopy(net) if spec is None or wants_evidence(splits, scorer, out_dir) else None
    net, rows, info = sparsify_model(net, splits, **options, finetune=with_epochs(config, finetune_epochs),
                                     progress=progress, device=device, task=scorer, example_inputs=example)
    results["skipped"] = info["skipped"]
    if "schedule_steps" in info:
        results["schedule_steps"] = info["schedule_steps"]
    if info["finetune"] is not None:
        results["finetune"] = info["finetune"]
    after = measure_profile(net, example, f"{name} sparse", measure, eval_data(splits), scorer)
    from prunekit import hf

    # NOTE: a Hugging Face model stays a save_pretrained folder, so its zeros are stored dense.
    results["stored_dense"] = hf.is_hf(net)
    sizes = sparse_sizes(net)
    if not results["stored_dense"]:  # NOTE: the size row is the file as saved, the sparse format
        after = dataclasses.replace(after, size_bytes=sizes.sparse)
    _record(results, net, rows, before.to_dict(), after.to_dict(), dense_nonzero, sizes)
    results["architecture"] = architecture_of(spec, splits)
    results["table"] = compare(before, after) + "\n" + _sparse_lines(results)
    with staged(out_dir) as out:
        if out is not None:
            results["files"] = save_result(net, out, spec, splits=splits, task=scorer.name,
                                           sparse=not results["stored_dense"], dense=dense if spec is None else None,
                                           metrics={"profile": after.to_dict()})
        evidence = evidence_of(net if dense is None else dense, net, splits, scorer, out_dir)
        return finish_with_report(results, out, evidence)


def _record(results: dict[str, Any], net: nn.Module, rows: list[LayerSparsity], before: dict[str, Any],
            after: dict[str, Any], dense_nonzero: int, sizes: SparseSizes) -> None:
    """Add the profiles, per-layer sparsity, non-zero counts and sizes on disk to ``results``."""
    results.update({
        "before": before, "after": after,
        "layers": [asdict(r) | {"sparsity": r.sparsity} for r in rows],
        "achieved_sparsity": total_sparsity(rows),
        "nonzero_params": {"before": dense_nonzero, "after": count_nonzero(net)},
        "sizes": asdict(sizes), "latency_note": LATENCY_NOTE,
    })


def _sparse_lines(results: Mapping[str, Any]) -> str:
    """The rows ``compare`` does not know: sparsity, non-zeros and the sparse file size."""
    sizes, nonzero = results["sizes"], results["nonzero_params"]
    return "\n".join([
        f"sparsity of the sparsified layers: {100 * results['achieved_sparsity']:.2f} % "
        f"({results['pattern']}, {results['method'] or results['importance']}, {results['scope']} scope)",
        f"non-zero parameters: {nonzero['before']:,} -> {nonzero['after']:,}",
        f"size on disk: dense safetensors {sizes['dense'] / 1e3:.1f} KB "
        f"(deflate {sizes['dense_compressed'] / 1e3:.1f} KB) -> sparse format "
        f"{sizes['sparse'] / 1e3:.1f} KB (deflate {sizes['sparse_compressed'] / 1e3:.1f} KB), "
        f"{sizes['dense'] / sizes['sparse']:.2f}x smaller",
        f"note: {LATENCY_NOTE}",
    ])
