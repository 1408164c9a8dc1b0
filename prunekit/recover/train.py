"""The one training loop, for baseline training and for fine-tuning after pruning.

:func:`train` trains a model in place (training is the one place a model is meant to change) on
DataSplits or any iterable of batches, with the loss of a :mod:`task <prunekit.tasks>`. It writes
a checkpoint after every epoch, resumes bit-identically, and runs unchanged under ``torchrun``
(see :mod:`prunekit.recover.distributed`).

Randomness: each epoch reseeds torch's global RNG from ``(seed, epoch, rank)`` inside
:func:`torch.random.fork_rng`, so the caller's global RNG state is the same after ``train`` as
before, and a resumed run repeats an uninterrupted one exactly. What a DataLoader needs for that is
in :mod:`prunekit.recover.sources`.

Epochs and steps are counted from 0. The learning rate is set before every optimizer step by
:func:`learning_rate`, a pure function of the step, so the "scheduler state" is just that step.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import torch
from torch import nn

from prunekit._modes import modes_of, restore_modes
from prunekit.errors import ConfigError, DataError
from prunekit.io import save_json, save_weights
from prunekit.measure.accuracy import evaluate
from prunekit.recover import checkpoint, distributed
from prunekit.recover.callbacks import Callback
from prunekit.recover.config import TrainConfig, parse_config
from prunekit.recover.sources import Source, build_source, epoch_batches, has_distributed_sampler
from prunekit.recover.tensorboard import TensorBoardLog
from prunekit.tasks import BaseTask, Classification, Custom, Metrics, Task, resolve
from prunekit.tasks.base import capped, no_samples
from prunekit.tasks.batches import batch_size_of, device_of, to_device

__all__ = [
    "CHECKPOINT",
    "RECORD",
    "WEIGHTS",
    "Callback",
    "TrainResult",
    "evaluate",
    "learning_rate",
    "train",
]

CHECKPOINT, WEIGHTS, RECORD = checkpoint.FILE, "model.safetensors", "train.json"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` measured.

    ``history`` holds one dict per epoch (``epoch``, ``lr``, ``train_loss`` (the task's loss),
    ``train_accuracy`` for classification, ``train_objective`` (the loss optimised) with callbacks
    that change it (``on_loss``: a distillation loss, a regulariser), and ``val_<metric>`` for each of the task's validation metrics,
    e.g. ``val_loss``, ``val_accuracy``), including epochs restored from a checkpoint. ``val`` and
    ``test`` are the task's :class:`~prunekit.tasks.Metrics` of the final model (a dict whose keys
    read as attributes: ``result.test.accuracy``; None without such data). ``epochs_run``
    counts the epochs trained by this call; ``wall_time_s`` is this call's wall time in seconds.
    """

    history: tuple[dict[str, Any], ...]
    val: Metrics | None
    test: Metrics | None
    epochs_run: int
    wall_time_s: float
    task: str = "classification"


@dataclass
class _Loop:
    """Everything one epoch needs; ``step`` counts optimizer steps over the whole run."""

    model: nn.Module
    wrapped: nn.Module
    optimizer: torch.optim.Optimizer
    source: Source
    task: Task
    config: TrainConfig
    context: distributed.Context
    device: torch.device
    callbacks: tuple[Any, ...]
    progress: bool
    step: int = 0
    generator_states: list[torch.Tensor] = field(default_factory=list)
    frozen: tuple[nn.Module, ...] = ()


def train(model: nn.Module, data: Any, config: TrainConfig | Mapping[str, Any], *,
          task: Task | str | None = None, val: Iterable[Any] | None = None,
          out_dir: str | os.PathLike[str] | None = None, resume: bool = False,
          progress: bool = False, callbacks: Sequence[Any] = (),
          device: torch.device | str | None = None) -> TrainResult:
    """Train ``model`` in place on ``data``, validating after every epoch.

    Args:
        data: DataSplits (batched here with ``config.batch_size``, validated on ``data.val``,
            tested on ``data.test``), :class:`~prunekit.data.Loaders`, or any re-iterable of
            batches such as a DataLoader (its own batch size applies).
        task: a Task or registered name; default classification (with ``config.label_smoothing``).
        val: batches to validate on (overrides the splits' own).
        out_dir: rank 0 writes ``checkpoint.safetensors`` after every epoch and ``model.safetensors`` plus
            ``train.json`` at the end. ``resume=True`` continues from its checkpoint (same config
            required); the final weights equal those of an uninterrupted run.
        progress: show a progress bar on stderr (rank 0); messages go to ``logging``.
        callbacks: hooks called by the loop (see :class:`Callback`); one whose class sets
            ``single_process = True`` (e.g. ChannelGates) is refused under torchrun.
        device: defaults to where the model's parameters are.

    Under torchrun, a ``val``/test loader with a DistributedSampler is evaluated in shares, one
    per rank, whose sums give the metrics of the whole; one without is evaluated whole on every rank.
    """
    config = parse_config(TrainConfig, config)
    scorer = _task_for(task, config)
    out = Path(out_dir) if out_dir is not None else None
    if resume and out is None:
        raise ConfigError("train: resume=True needs out_dir (the folder holding checkpoint.safetensors); "
                          "got None. Pass the out_dir of the run to continue.")
    started = time.perf_counter()
    target = _resolve_device(model, device)
    context = distributed.setup(target)
    _check_callbacks(callbacks, context)
    log = TensorBoardLog(config.tensorboard) if config.tensorboard and context.is_main else None
    callbacks = (*callbacks, log) if log is not None else tuple(callbacks)
    try:
        model.to(target)
        with torch.random.fork_rng(devices=_rng_devices(target)):
            # NOTE: inside the fork: checking the data may start a loader's iterator, which draws a seed.
            source = build_source(data, val, config, context)
            loop = _build_loop(model, source, scorer, config, context, target, tuple(callbacks),
                               progress)
            _begin(loop)
            history = _restore(loop, out / CHECKPOINT) if resume and out is not None else []
            first = len(history)
            for epoch in range(first, config.epochs):
                history.append(_run_epoch(loop, epoch))
                if out is not None and context.is_main:
                    _save_checkpoint(loop, history, out / CHECKPOINT)
            result = _finish(loop, history, config.epochs - first, started)
        if out is not None and context.is_main:
            _write_outputs(model, result, config, context, out)
        distributed.barrier(context)
    finally:
        if log is not None:
            log.close()
        distributed.teardown(context)
    return result


def _check_callbacks(callbacks: Sequence[Any], context: distributed.Context) -> None:
    """Refuse, under several processes, a callback whose class says ``single_process = True``."""
    if not context.distributed:
        return
    for callback in callbacks:
        if getattr(type(callback), "single_process", False):
            # NOTE: such a callback keeps its own parameters or state that DDP does not average, so the
            # ranks would drift apart and rank 0 would save only its own version.
            raise ConfigError(f"train: {type(callback).__name__} works in a single process only, but this run has "
                              f"{context.world_size} processes (torchrun); its state would differ on every rank. "
                              f"Fix: run this training with plain python (one process), or drop the callback.")


def _task_for(task: Task | str | None, config: TrainConfig) -> Task:
    """The task to train with; ``config.label_smoothing`` goes to a classification task by name."""
    if task is None or task == "classification":
        return Classification(label_smoothing=config.label_smoothing)
    resolved = resolve(task)
    if config.label_smoothing and not isinstance(resolved, Classification):
        raise ConfigError(f"train: label_smoothing={config.label_smoothing} applies only to "
                          f"classification; got task {resolved.name!r}. Fix: set label_smoothing: 0.")
    return resolved


def learning_rate(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate at optimizer ``step`` (from 0) of a run of ``config.epochs`` epochs.

    Linear warm-up from ``lr / W`` to ``lr`` over the first ``W = warmup_epochs * steps_per_epoch``
    steps; then constant, cosine decay towards 0 at the last step (Loshchilov & Hutter, SGDR,
    2017), or ``gamma ** (epoch // step_size)`` times ``lr``.
    """
    warmup = config.warmup_epochs * steps_per_epoch
    if step < warmup:
        return config.lr * (step + 1) / warmup
    if config.scheduler == "cosine":
        span = max(config.epochs * steps_per_epoch - warmup, 1)
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / span))
    if config.scheduler == "step":
        epoch = step // max(steps_per_epoch, 1)
        return config.lr * config.gamma ** (epoch // config.step_size)
    return config.lr


def _resolve_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    if device is None:
        device = device_of(model)
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        # NOTE: under torchrun each process owns the GPU matching its LOCAL_RANK.
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0") or 0))
    return device


def _rng_devices(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []


def _build_optimizer(params: Iterable[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    params = list(params)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               nesterov=config.nesterov, weight_decay=config.weight_decay)
    kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return kind(params, lr=config.lr, weight_decay=config.weight_decay)


def _build_loop(model: nn.Module, source: Source, task: Task, config: TrainConfig,
                context: distributed.Context, device: torch.device, callbacks: tuple[Any, ...],
                progress: bool) -> _Loop:
    trainable = [p for p in model.parameters() if p.requires_grad]
    known = {id(p) for p in trainable}
    for callback in callbacks:
        extra = getattr(callback, "parameters", None)
        for p in (extra() if extra is not None else ()):
            if p.requires_grad and id(p) not in known:
                trainable.append(p)
                known.add(id(p))
    if not trainable:
        total = sum(1 for _ in model.parameters())
        raise ConfigError(f"train: {type(model).__name__} has no parameter to train ({total} parameter(s), "
                          f"none with requires_grad=True). Fix: pass a model with weights to train, or unfreeze "
                          f"some (p.requires_grad_(True)).")
    return _Loop(model=model, wrapped=distributed.wrap(model, context),
                 optimizer=_build_optimizer(trainable, config), source=source, task=task,
                 config=config, context=context, device=device, callbacks=callbacks,
                 progress=progress and context.is_main, frozen=_frozen(model))


def _frozen(model: nn.Module) -> tuple[nn.Module, ...]:
    """The submodules the user put in eval mode inside a model in training mode (a frozen
    BatchNorm, a fixed backbone), outermost only: training keeps them so. A model wholly in eval
    mode trains wholly (``model.eval()`` before handing it over is habit, not a choice per layer)."""
    if not model.training:
        return ()
    found: list[nn.Module] = []
    inside: set[int] = set()
    for module in model.modules():
        if id(module) in inside:
            continue
        if not module.training:
            found.append(module)
            inside.update(id(m) for m in module.modules())
    return tuple(found)


def _begin(loop: _Loop) -> None:
    for callback in loop.callbacks:
        hook = getattr(callback, "on_train_begin", None)
        if hook is not None:
            hook(loop.model, loop.task)


def _validate(loop: _Loop, batches: Iterable[Any] | None) -> Metrics | None:
    """The task's metrics on ``batches``: on all of them, also when a DistributedSampler gives
    each rank only its share."""
    if batches is None:
        return None
    cap = loop.config.max_eval_batches
    if loop.context.distributed and has_distributed_sampler(batches):
        return _evaluate_shards(loop.task, loop.model, batches, cap, loop.context)
    # NOTE: unsharded evaluation data: every rank scores all of it with the same weights (buffers
    # synced first), so each rank's numbers are already those of the whole.
    return Metrics(loop.task.evaluate(loop.model, batches, max_batches=cap))


def _evaluate_shards(task: Task, model: nn.Module, batches: Iterable[Any], max_batches: int | None,
                     context: distributed.Context) -> Metrics:
    """Metrics over every rank's share of a loader that a DistributedSampler splits between ranks.

    A task whose metrics are made from per-batch sums (``batch_sums`` / ``summarise``: the built-in
    tasks, Custom without a metric_fn) gets the sums of all ranks added before ``summarise``, so
    every metric is exact, derived ones included (perplexity = exp of the mean loss over all
    tokens). Any other task is evaluated on each share and its metrics are averaged weighted by
    the samples scored (``count`` where it reports one): exact for per-sample means only, which a
    warning says. ``max_batches`` caps each rank's share. NOTE: a DistributedSampler repeats a few
    samples when the data does not split evenly (unless ``drop_last=True``); they count twice, as
    in training.
    """
    owner = f"{type(task).__name__}.evaluate"
    if _sums_based(task):
        shares = distributed.all_gather(_share_sums(task, model, batches, max_batches, owner), context)
        totals: dict[str, float] = {}
        for _, sums in shares:
            for key, value in sums.items():
                totals[key] = totals.get(key, 0.0) + value
        seen = sum(n for n, _ in shares)
        if seen == 0 or totals.get("count", 1.0) <= 0:
            raise no_samples(owner, seen)
        return Metrics(task.summarise(totals))
    if context.is_main:
        warnings.warn(f"train: under torchrun each rank evaluates its DistributedSampler share with "
                      f"{owner}, and the metrics are averaged over ranks weighted by samples: exact for "
                      f"per-sample means only. For exact metrics, pass an evaluation loader without a "
                      f"DistributedSampler (every rank then scores all of it).", stacklevel=2)
    counted = [0]

    def counting() -> Iterator[Any]:
        for batch in batches:
            counted[0] += batch_size_of(batch)
            yield batch

    metrics = task.evaluate(model, counting(), max_batches=max_batches)
    parts = distributed.all_gather((counted[0], dict(metrics)), context)
    weights = [float(m.get("count", n)) for n, m in parts]
    total = sum(weights) or 1.0
    keys = [k for k in parts[0][1] if all(k in m for _, m in parts)]
    return Metrics({key: (int(sum(float(m[key]) for _, m in parts)) if key == "count" else
                          sum(w * float(m[key]) for w, (_, m) in zip(weights, parts)) / total)
                    for key in keys})


def _sums_based(task: Task) -> TypeGuard[BaseTask]:
    """True when ``task.evaluate`` is ``summarise`` of the summed ``batch_sums`` (BaseTask's)."""
    if isinstance(task, Custom):
        return task.metric_fn is None
    return isinstance(task, BaseTask) and getattr(type(task), "evaluate", None) is BaseTask.evaluate


@torch.no_grad()
def _share_sums(task: BaseTask, model: nn.Module, batches: Iterable[Any], max_batches: int | None,
                owner: str) -> tuple[int, dict[str, float]]:
    """(batches seen, summed ``batch_sums``) of this rank's share, in eval mode as BaseTask.evaluate
    does; an empty share is no error here (the whole may still have samples)."""
    device, modes = device_of(model), modes_of(model)
    model.eval()
    totals: dict[str, float] = {}
    seen = 0
    try:
        for batch in capped(batches, max_batches, owner=owner):
            seen += 1
            for key, value in task.batch_sums(model, to_device(batch, device)).items():
                totals[key] = totals.get(key, 0.0) + float(value)
    finally:
        restore_modes(modes)
    return seen, totals


def _run_epoch(loop: _Loop, epoch: int) -> dict[str, Any]:
    """Train one epoch, sync ranks, validate, run the epoch callbacks; returns the history row."""
    row: dict[str, Any] = {"epoch": epoch}
    row.update(_train_epoch(loop, epoch))
    row["lr"] = loop.optimizer.param_groups[0]["lr"]
    distributed.sync_buffers(loop.model, loop.context)
    val = _validate(loop, loop.source.val)
    row.update({f"val_{key}": value for key, value in (val or {}).items() if key != "count"})
    if loop.context.is_main:
        logger.info("epoch %d/%d: %s", epoch + 1, loop.config.epochs,
                    ", ".join(f"{k} {v:.4g}" for k, v in row.items()
                              if k != "epoch" and isinstance(v, float)))
    for callback in loop.callbacks:
        hook = getattr(callback, "on_epoch_end", None)
        if hook is not None:
            hook(epoch, loop.model, dict(row))
    return row


def _train_epoch(loop: _Loop, epoch: int) -> dict[str, float]:
    """One pass over this rank's batches; returns train_loss, the task's loss (and train_accuracy), over
    all ranks, and train_objective, the loss optimised, where ``on_loss`` callbacks change it."""
    config, source = loop.config, loop.source
    loop.wrapped.train()
    for module in loop.frozen:
        module.eval()
    classifier = loop.task if isinstance(loop.task, Classification) else None
    adders = [add for add in (getattr(callback, "on_loss", None) for callback in loop.callbacks) if add is not None]
    totals = torch.zeros(5, dtype=torch.float64)  # summed loss * samples, samples, correct, labels scored, objective * samples
    batches = epoch_batches(source, epoch, config.seed, loop.context.rank)
    bar = _progress_bar(loop, epoch) if loop.progress else None
    seen = 0
    for batch in batches:
        seen += 1
        batch = to_device(batch, loop.device)
        for group in loop.optimizer.param_groups:
            group["lr"] = learning_rate(config, loop.step, source.steps_per_epoch or 0)
        task_loss, outputs = _loss_and_outputs(loop.task, loop.wrapped, batch)
        loss = task_loss
        for add_terms in adders:
            loss = add_terms(loop.step, loop.model, batch, outputs, loss)
        loop.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            nn.utils.clip_grad_norm_(loop.model.parameters(), config.grad_clip)
        loop.optimizer.step()
        # NOTE: the task's loss, not the optimised one: a growing penalty would read as training going wrong
        value, n = task_loss.item(), batch_size_of(batch)
        correct, scored = (classifier.correct(outputs, batch) if classifier and outputs is not None
                           else (0, 0))  # NOTE: per position for per-pixel logits, so not n
        objective = loss.item() if loss is not task_loss else value
        totals += torch.tensor([value * n, n, correct, scored, objective * n], dtype=torch.float64)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}", refresh=False)
        for callback in loop.callbacks:
            hook = getattr(callback, "on_step_end", None)
            if hook is not None:
                hook(loop.step, loop.model, value)
        loop.step += 1
    if bar is not None:
        bar.close()
    if seen == 0:  # NOTE: data without len() is found empty only here (build_source checks the rest)
        raise DataError(f"train: 'data' yielded no batches in epoch {epoch}; expected at least one training "
                        f"step per epoch. Fix: pass an iterable of batches that yields some every epoch.")
    loop.generator_states = [g.get_state() for g in source.generators]
    loss_sum, count, correct, scored, objective_sum = distributed.all_reduce_sum(totals, loop.context).tolist()
    row = {"train_loss": loss_sum / max(count, 1)}
    if classifier is not None:
        row["train_accuracy"] = correct / max(scored, 1)
    if adders:
        row["train_objective"] = objective_sum / max(count, 1)
    return row


def _loss_and_outputs(task: Task, model: nn.Module, batch: Any) -> tuple[torch.Tensor, Any]:
    """One forward through the task: its loss and (when it has them) its outputs."""
    both = getattr(task, "loss_and_outputs", None)
    if both is not None:
        loss, outputs = both(model, batch)
        return loss, outputs
    return task.loss(model, batch), None


def _progress_bar(loop: _Loop, epoch: int) -> Any:
    import sys

    from tqdm import tqdm  # type: ignore[import-untyped]

    return tqdm(total=loop.source.steps_per_epoch, desc=f"epoch {epoch + 1}/{loop.config.epochs}",
                file=sys.stderr, leave=False)


def _finish(loop: _Loop, history: list[dict[str, Any]], epochs_run: int,
            started: float) -> TrainResult:
    """Final validation and test metrics of the trained model."""
    val, test = _validate(loop, loop.source.val), _validate(loop, loop.source.test)
    return TrainResult(history=tuple(history), val=val, test=test, epochs_run=max(epochs_run, 0),
                       wall_time_s=time.perf_counter() - started, task=loop.task.name)


def _save_checkpoint(loop: _Loop, history: list[dict[str, Any]], path: Path) -> None:
    """Write the resumable state atomically (plain data: see :mod:`prunekit.recover.checkpoint`)."""
    checkpoint.save({
        "version": checkpoint.VERSION,
        "epoch": len(history) - 1,
        "model": loop.model.state_dict(),
        "optimizer": loop.optimizer.state_dict(),
        "scheduler": {"step": loop.step, "steps_per_epoch": loop.source.steps_per_epoch},
        "history": history,
        "config": loop.config.model_dump(),
        "task": loop.task.name,
        "world_size": loop.context.world_size,
        "generators": list(loop.generator_states),
        "callbacks": [cb.state_dict() if hasattr(cb, "state_dict") else None
                      for cb in loop.callbacks],
    }, path)


def _restore(loop: _Loop, path: Path) -> list[dict[str, Any]]:
    """Load ``path`` into the loop (weights, optimizer, step, generators, callbacks)."""
    state = checkpoint.load(path, loop.device)
    _check_same_run(state, loop, path)
    checkpoint.check_model(state["model"], loop.model, path)
    loop.model.load_state_dict(state["model"])
    loop.optimizer.load_state_dict(state["optimizer"])
    loop.step = int(state["scheduler"]["step"])
    saved = list(state.get("generators", []))
    if len(saved) == len(loop.source.generators):
        for generator, value in zip(loop.source.generators, saved):
            generator.set_state(value.cpu() if generator.device.type == "cpu" else value)
    for callback, callback_state in zip(loop.callbacks, state.get("callbacks", [])):
        if callback_state is not None and hasattr(callback, "load_state_dict"):
            callback.load_state_dict(callback_state)
    return list(state["history"])


def _check_same_run(state: Mapping[str, Any], loop: _Loop, path: Path) -> None:
    """Raise a ConfigError naming every field where this run differs from the checkpoint's."""
    saved, current = state.get("config", {}), loop.config.model_dump()
    differing = [f"{key} (checkpoint {saved.get(key)!r}, now {current.get(key)!r})"
                 for key in sorted(set(saved) | set(current)) if saved.get(key) != current.get(key)]
    task = state.get("task", "classification")
    if task != loop.task.name:
        differing.append(f"task (checkpoint {task!r}, now {loop.task.name!r})")
    if differing:
        raise ConfigError(
            f"train: the config differs from the one in '{path}' in {', '.join(differing)}. Resume "
            f"with the same options, or train into a new out_dir without resume."
        )
    scheduler = state.get("scheduler", {})
    steps = loop.source.steps_per_epoch
    if "steps_per_epoch" in scheduler and scheduler["steps_per_epoch"] != steps:
        # NOTE: the learning rate is a function of the step count, so another epoch length shifts it.
        raise ConfigError(
            f"train: the data gives {steps} steps per epoch, but the run in '{path}' took "
            f"{scheduler['steps_per_epoch']}; the learning-rate schedule and the epochs would not line "
            f"up. Resume with the same data, batch size and number of processes, or train into a new "
            f"out_dir without resume."
        )


def _write_outputs(model: nn.Module, result: TrainResult, config: TrainConfig,
                   context: distributed.Context, out: Path) -> None:
    """model.safetensors (the trained weights) and train.json (what was measured)."""
    save_weights(model, out / WEIGHTS)
    save_json({
        "config": config.model_dump(), "task": result.task, "history": list(result.history),
        "val": result.val, "test": result.test, "epochs_run": result.epochs_run,
        "wall_time_s": result.wall_time_s, "world_size": context.world_size,
    }, out / RECORD)
