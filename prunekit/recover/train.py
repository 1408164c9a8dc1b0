"""The one training loop, for baseline training and for fine-tuning after pruning.

:func:`fit` trains a model in place (training is the one place a model is meant to change),
writes a checkpoint after every epoch, resumes bit-identically, and runs unchanged under
``torchrun`` (see :mod:`prunekit.recover.distributed`).

Randomness: shuffling is a pure function of ``(config.seed, epoch)`` through the loader. Dropout
needs torch's global RNG, so each epoch reseeds it from ``(seed, epoch, rank)``, inside
:func:`torch.random.fork_rng`, so the caller's global RNG state is the same after ``fit`` as
before. Reseeding per epoch is also what makes a resumed run repeat an uninterrupted one exactly.

Epochs and steps are counted from 0. The learning rate is set before every optimizer step by
:func:`learning_rate`, a pure function of the step, so the "scheduler state" is just that step.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from prunekit.data.base import DataSplits, make_loader, set_epoch
from prunekit.errors import ConfigError, DataError, DataNotFoundError
from prunekit.io import atomic_path, save_json, save_weights
from prunekit.measure.accuracy import Metrics, evaluate
from prunekit.recover import distributed
from prunekit.recover.config import TrainConfig, parse_config

__all__ = ["TrainResult", "Callback", "fit", "learning_rate", "evaluate", "CHECKPOINT", "WEIGHTS",
           "RECORD"]

CHECKPOINT, WEIGHTS, RECORD = "checkpoint.pt", "model.safetensors", "train.json"
_CHECKPOINT_VERSION = 1
_EVAL_BATCH = 512


@dataclass(frozen=True)
class TrainResult:
    """What :func:`fit` measured.

    ``history`` holds one dict per epoch (``epoch``, ``lr``, ``train_loss``, ``train_accuracy``,
    ``val_loss``, ``val_accuracy``), including epochs restored from a checkpoint. ``val`` and
    ``test`` are measured on the final model (``test`` is None when the test split is empty).
    ``epochs_run`` counts the epochs trained by this call (fewer than ``config.epochs`` after a
    resume); ``wall_time_s`` is this call's wall time in seconds.
    """

    history: tuple[dict[str, Any], ...]
    val: Metrics
    test: Metrics | None
    epochs_run: int
    wall_time_s: float


class Callback(Protocol):
    """Hooks into the loop; every method is optional (implement any of them).

    ``on_step_end(step, model, loss)`` runs after each optimizer step (``loss`` a float, this
    rank's batch loss); ``on_epoch_end(epoch, model, metrics)`` after validation, with that
    epoch's history dict. ``on_loss(step, model, inputs, labels, logits, loss)`` returns the loss
    to optimise (distillation and regularisers add their terms there), and ``parameters()``
    yields extra trainable tensors (learnable gates) that join the optimizer. ``model`` is the user's module (never the DDP wrapper). Under torchrun
    callbacks run on every rank, so a callback that edits weights keeps the ranks in step. A
    callback with ``state_dict()``/``load_state_dict()`` has its state checkpointed and restored.
    """

    def on_epoch_end(self, epoch: int, model: nn.Module, metrics: Mapping[str, Any]) -> None: ...

    def on_step_end(self, step: int, model: nn.Module, loss: float) -> None: ...

    def on_loss(self, step: int, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                logits: torch.Tensor, loss: torch.Tensor) -> torch.Tensor: ...

    def parameters(self) -> Iterable[torch.Tensor]: ...


@dataclass
class _Loop:
    """Everything one epoch needs; ``step`` counts optimizer steps over the whole run."""

    model: nn.Module
    wrapped: nn.Module
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    config: TrainConfig
    context: distributed.Context
    device: torch.device
    steps_per_epoch: int
    callbacks: tuple[Any, ...]
    step: int = 0


def fit(model: nn.Module, data: DataSplits, config: TrainConfig | Mapping[str, Any], *,
        out_dir: str | os.PathLike[str] | None = None, resume: bool = False, progress: bool = True,
        callbacks: Sequence[Any] = (), device: torch.device | str | None = None) -> TrainResult:
    """Train ``model`` in place on ``data.train``, validating on ``data.val`` after every epoch.

    With ``out_dir``, rank 0 writes ``checkpoint.pt`` after every epoch and ``model.safetensors``
    plus ``train.json`` at the end. ``resume=True`` continues from ``out_dir/checkpoint.pt``
    (same config required); the final weights equal those of an uninterrupted run.
    ``device`` defaults to where the model's parameters are. Returns a :class:`TrainResult`.
    """
    config = parse_config(TrainConfig, config)
    out = Path(out_dir) if out_dir is not None else None
    if resume and out is None:
        raise ConfigError("fit: resume=True needs out_dir (the folder holding checkpoint.pt); got "
                          "None. Pass the out_dir of the run to continue.")
    started = time.perf_counter()
    target = _resolve_device(model, device)
    context = distributed.setup(target)
    try:
        model.to(target)
        with torch.random.fork_rng(devices=_rng_devices(target)):
            loop = _build_loop(model, data, config, context, target, tuple(callbacks))
            history = _restore(loop, out / CHECKPOINT) if resume and out is not None else []
            first = len(history)
            for epoch in range(first, config.epochs):
                history.append(_run_epoch(loop, data, epoch, progress))
                if out is not None and context.is_main:
                    _save_checkpoint(loop, history, out / CHECKPOINT)
        result = _finish(loop, data, history, config.epochs - first, started)
        if out is not None and context.is_main:
            _write_outputs(model, result, config, context, out)
        distributed.barrier(context)
    finally:
        distributed.teardown(context)
    return result


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
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
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


def _build_loop(model: nn.Module, data: DataSplits, config: TrainConfig,
                context: distributed.Context, device: torch.device,
                callbacks: tuple[Any, ...]) -> _Loop:
    loader = make_loader(data.train, batch_size=config.batch_size, shuffle=True, seed=config.seed,
                         num_replicas=context.world_size, rank=context.rank)
    steps = len(loader)
    if config.max_steps_per_epoch is not None:
        steps = min(steps, config.max_steps_per_epoch)
    trainable = [p for p in model.parameters() if p.requires_grad]
    known = {id(p) for p in trainable}
    for callback in callbacks:
        extra = getattr(callback, "parameters", None)
        for p in (extra() if extra is not None else ()):
            if p.requires_grad and id(p) not in known:
                trainable.append(p)
                known.add(id(p))
    return _Loop(model=model, wrapped=distributed.wrap(model, context),
                 optimizer=_build_optimizer(trainable, config), loader=loader, config=config,
                 context=context, device=device, steps_per_epoch=steps, callbacks=callbacks)


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed of the global RNG (dropout) for one epoch on one rank; distinct per rank and epoch."""
    return ((seed * 1_000_003 + epoch) * 1_009 + rank) % (2**63)


def _run_epoch(loop: _Loop, data: DataSplits, epoch: int, progress: bool) -> dict[str, Any]:
    """Train one epoch, sync ranks, validate, run the epoch callbacks; returns the history row."""
    torch.manual_seed(_epoch_seed(loop.config.seed, epoch, loop.context.rank))
    set_epoch(loop.loader, epoch)
    train_loss, train_accuracy = _train_epoch(loop, epoch, progress)
    distributed.sync_buffers(loop.model, loop.context)
    val = evaluate(loop.model, data.val, batch_size=_EVAL_BATCH, device=loop.device)
    row = {"epoch": epoch, "lr": loop.optimizer.param_groups[0]["lr"],
           "train_loss": train_loss, "train_accuracy": train_accuracy,
           "val_loss": val.loss, "val_accuracy": val.accuracy}
    for callback in loop.callbacks:
        hook = getattr(callback, "on_epoch_end", None)
        if hook is not None:
            hook(epoch, loop.model, dict(row))
    return row


def _train_epoch(loop: _Loop, epoch: int, progress: bool) -> tuple[float, float]:
    """One pass over this rank's shard; returns (mean loss, accuracy) over all ranks."""
    config, device = loop.config, loop.device
    loop.wrapped.train()
    totals = torch.zeros(3, dtype=torch.float64)  # summed loss, correct, count
    batches = islice(loop.loader, loop.steps_per_epoch)
    bar = tqdm(batches, total=loop.steps_per_epoch, desc=f"epoch {epoch + 1}/{config.epochs}",
               file=sys.stderr, leave=False, disable=not (progress and loop.context.is_main))
    for inputs, labels in bar:
        for group in loop.optimizer.param_groups:
            group["lr"] = learning_rate(config, loop.step, loop.steps_per_epoch)
        inputs, labels = inputs.to(device), labels.to(device)
        logits = loop.wrapped(inputs)
        loss = nn.functional.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
        for callback in loop.callbacks:
            add_terms = getattr(callback, "on_loss", None)
            if add_terms is not None:
                loss = add_terms(loop.step, loop.model, inputs, labels, logits, loss)
        loop.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            nn.utils.clip_grad_norm_(loop.model.parameters(), config.grad_clip)
        loop.optimizer.step()
        value = loss.item()
        correct = (logits.detach().argmax(dim=1) == labels).sum().item()
        totals += torch.tensor([value * len(labels), correct, len(labels)], dtype=torch.float64)
        bar.set_postfix(loss=f"{value:.4f}", refresh=False)
        for callback in loop.callbacks:
            hook = getattr(callback, "on_step_end", None)
            if hook is not None:
                hook(loop.step, loop.model, value)
        loop.step += 1
    bar.close()
    loss_sum, correct, count = distributed.all_reduce_sum(totals, loop.context).tolist()
    return loss_sum / max(count, 1), correct / max(count, 1)


def _finish(loop: _Loop, data: DataSplits, history: list[dict[str, Any]], epochs_run: int,
            started: float) -> TrainResult:
    """Final validation and test metrics of the trained model."""
    val = evaluate(loop.model, data.val, batch_size=_EVAL_BATCH, device=loop.device)
    test = (evaluate(loop.model, data.test, batch_size=_EVAL_BATCH, device=loop.device)
            if len(data.test) else None)
    return TrainResult(history=tuple(history), val=val, test=test, epochs_run=max(epochs_run, 0),
                       wall_time_s=time.perf_counter() - started)


def _callback_states(callbacks: Iterable[Any]) -> list[Any]:
    return [cb.state_dict() if hasattr(cb, "state_dict") else None for cb in callbacks]


def _save_checkpoint(loop: _Loop, history: list[dict[str, Any]], path: Path) -> None:
    """Write the resumable state atomically; only tensors, numbers, strings, lists and dicts."""
    state = {
        "version": _CHECKPOINT_VERSION,
        "epoch": len(history) - 1,
        "model": loop.model.state_dict(),
        "optimizer": loop.optimizer.state_dict(),
        "scheduler": {"step": loop.step, "steps_per_epoch": loop.steps_per_epoch},
        "history": history,
        "config": loop.config.model_dump(),
        "world_size": loop.context.world_size,
        "callbacks": _callback_states(loop.callbacks),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _restore(loop: _Loop, path: Path) -> list[dict[str, Any]]:
    """Load ``path`` into the loop (weights, optimizer, step, callbacks); returns the history."""
    if not path.is_file():
        raise DataNotFoundError(
            f"fit: resume=True but '{path}' does not exist. Train once without resume to create "
            f"it, or pass the out_dir of the interrupted run."
        )
    try:
        state = torch.load(path, map_location=loop.device, weights_only=True)
    except Exception as exc:  # NOTE: torch raises several types for a damaged or foreign file.
        raise DataError(f"fit: '{path}' is not a prunekit checkpoint ({exc}). Delete it and "
                        f"train without resume.") from exc
    _check_same_config(state.get("config", {}), loop.config, path)
    loop.model.load_state_dict(state["model"])
    loop.optimizer.load_state_dict(state["optimizer"])
    loop.step = int(state["scheduler"]["step"])
    for callback, saved in zip(loop.callbacks, state.get("callbacks", [])):
        if saved is not None and hasattr(callback, "load_state_dict"):
            callback.load_state_dict(saved)
    return list(state["history"])


def _check_same_config(saved: Mapping[str, Any], config: TrainConfig, path: Path) -> None:
    """Raise a ConfigError naming every field where ``config`` differs from the checkpoint's."""
    current = config.model_dump()
    differing = [f"{key} (checkpoint {saved.get(key)!r}, now {current.get(key)!r})"
                 for key in sorted(set(saved) | set(current)) if saved.get(key) != current.get(key)]
    if differing:
        raise ConfigError(
            f"fit: the config differs from the one in '{path}' in {', '.join(differing)}. Resume "
            f"with the same options, or train into a new out_dir without resume."
        )


def _write_outputs(model: nn.Module, result: TrainResult, config: TrainConfig,
                   context: distributed.Context, out: Path) -> None:
    """model.safetensors (the trained weights) and train.json (what was measured)."""
    save_weights(model, out / WEIGHTS)
    save_json({
        "config": config.model_dump(), "history": list(result.history),
        "val": asdict(result.val), "test": asdict(result.test) if result.test else None,
        "epochs_run": result.epochs_run, "wall_time_s": result.wall_time_s,
        "world_size": context.world_size,
    }, out / RECORD)
