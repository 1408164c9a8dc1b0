"""Where the training loop's batches come from: DataSplits (seeded whole-batch loaders made here),
:class:`~prunekit.data.Loaders`, or any iterable of batches such as the user's DataLoader.

Determinism, which bit-identical resume rests on: each epoch's batches must be a function of the
epoch. That holds for

- a loader whose sampler is a ``DistributedSampler`` (``set_epoch(epoch)`` is called every epoch),
  as :func:`~prunekit.data.make_loader` builds;
- a loader whose shuffle draws from torch's global RNG (``DataLoader(shuffle=True)`` without a
  generator): the loop seeds that RNG from ``(seed, epoch)`` before iterating;
- a loader with its own ``torch.Generator`` (``DataLoader(..., generator=g)``): the generator's
  state is saved in the checkpoint after every epoch and restored on resume;
- an unshuffled loader.

Randomness elsewhere (numpy or ``random`` in a dataset's transforms, a streaming source) must be
a function of the epoch by itself. Under DDP a loader without a ``DistributedSampler`` is sharded
here: every rank iterates the same sequence and keeps every world_size-th batch, in whole rounds
(every rank takes as many steps), so when the number of batches is not a multiple of the world
size the last few batches of every epoch are never trained on; a warning says how many.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain, islice
from typing import Any

import torch
from torch.utils.data import DistributedSampler

from prunekit.data.base import DataSplits, make_loader
from prunekit.data.loaders import Loaders, TensorBatches
from prunekit.errors import ConfigError, DataError
from prunekit.recover.config import TrainConfig
from prunekit.recover.distributed import Context

__all__ = ["EVAL_BATCH", "Source", "build_source", "epoch_batches", "epoch_seed"]

EVAL_BATCH = 512
_END = object()


@dataclass
class Source:
    """The batches of one run: ``train`` (re-iterated every epoch), ``val``/``test`` (or None)."""

    train: Iterable[Any]
    val: Iterable[Any] | None
    test: Iterable[Any] | None
    steps_per_epoch: int | None
    shard: tuple[int, int] | None = None  # (rank, world_size) when this module shards
    generators: list[torch.Generator] = field(default_factory=list)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed of the global RNG for one epoch on one rank; distinct per rank and epoch."""
    return ((seed * 1_000_003 + epoch) * 1_009 + rank) % (2**63)


def build_source(data: Any, val: Iterable[Any] | None, config: TrainConfig,
                 context: Context) -> Source:
    """Turn ``data`` (DataSplits, Loaders or an iterable of batches) into this rank's Source.

    Every check on the data is made here, before the model trains: a call that fails on bad data
    leaves the model as it was. An evaluation iterable without ``len()`` is checked by drawing its
    first batch, so :func:`~prunekit.recover.train` calls this inside its fork of the RNG.
    """
    if isinstance(data, DataSplits):
        loader = make_loader(data.train, batch_size=config.batch_size, shuffle=True,
                             seed=config.seed, num_replicas=context.world_size, rank=context.rank)
        held = val if val is not None else _eval_loader(data.val)
        test = _eval_loader(data.test) if len(data.test) else None
        source = Source(loader, held, test, _cap(len(loader), config))
        _check_reiterable("val", held, config)
        _check_steps(source.steps_per_epoch, config, False, len(loader), context.world_size)
    else:
        test = None
        if isinstance(data, Loaders):
            data, val, test = data.train, (val if val is not None else data.val), data.test
        for label, batches in (("data", data), ("val", val), ("test", test)):
            _check_reiterable(label, batches, config)
        shard = None
        if context.distributed and not has_distributed_sampler(data):
            shard = (context.rank, context.world_size)
        length = steps = _length(data)
        if steps is not None and shard is not None:
            steps //= context.world_size  # NOTE: only full rounds, so every rank takes as many steps
            if context.is_main:
                _warn_dropped(steps, length, config, context.world_size)
        steps = _cap(steps, config)
        _check_steps(steps, config, shard is not None, length, context.world_size)
        source = Source(data, val, test, steps, shard, _generators(data))
    for label, batches in (("val", source.val), ("test", source.test)):
        _check_not_empty(label, batches)
    return source


def epoch_batches(source: Source, epoch: int, seed: int, rank: int) -> Iterator[Any]:
    """This rank's batches of ``epoch``; reseeds the global RNG (the caller forks it)."""
    set_sampler_epoch(source.train, epoch)
    # NOTE: the loader draws its shuffle seed from the global RNG when its iterator starts (and
    # at the first batch): the same seed on every rank, so shards of one order are disjoint.
    torch.manual_seed(epoch_seed(seed, epoch, 0))
    iterator = iter(source.train)
    first = next(iterator, _END)
    torch.manual_seed(epoch_seed(seed, epoch, rank))  # dropout: distinct per rank
    batches: Iterator[Any] = iterator if first is _END else chain((first,), iterator)
    if source.shard is not None:
        batches = islice(batches, source.shard[0], None, source.shard[1])
    return islice(batches, source.steps_per_epoch)


def has_distributed_sampler(loader: Any) -> bool:
    """True when the loader's sampler (or its batch sampler's) is a DistributedSampler."""
    return any(isinstance(s, DistributedSampler) for s in _samplers(loader))


def set_sampler_epoch(loader: Any, epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on every sampler of the loader that has it."""
    for sampler in _samplers(loader):
        hook = getattr(sampler, "set_epoch", None)
        if callable(hook):
            hook(epoch)


def _samplers(loader: Any) -> list[Any]:
    found: list[Any] = []
    for owner in (loader, getattr(loader, "batch_sampler", None)):
        for name in ("sampler", "batch_sampler"):
            sampler = getattr(owner, name, None) if owner is not None else None
            for candidate in (sampler, getattr(sampler, "sampler", None)):
                if candidate is not None and all(candidate is not s for s in found):
                    found.append(candidate)
    return found


def _generators(loader: Any) -> list[torch.Generator]:
    """The torch.Generators a loader and its samplers draw from (their state is checkpointed)."""
    out: list[torch.Generator] = []
    for owner in [loader, *_samplers(loader)]:
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator) and all(generator is not g for g in out):
            out.append(generator)
    return out


def _eval_loader(dataset: Any) -> Iterable[Any]:
    return TensorBatches(dataset, EVAL_BATCH)


def _length(batches: Any) -> int | None:
    try:
        return len(batches)
    except TypeError:
        return None


def _cap(steps: int | None, config: TrainConfig) -> int | None:
    cap = config.max_steps_per_epoch
    if cap is None:
        return steps
    return cap if steps is None else min(steps, cap)


def _check_reiterable(label: str, batches: Any, config: TrainConfig) -> None:
    """``data`` must be an iterable of batches, ``val``/``test`` one or None; more than one pass
    over it (epochs, or evaluations) needs a re-iterable one, not an iterator."""
    if batches is None and label != "data":
        return
    if not isinstance(batches, Iterable):
        raise ConfigError(f"train: '{label}' must be DataSplits, Loaders or an iterable of batches "
                          f"(a DataLoader); got {type(batches).__name__}. Fix: wrap your dataset "
                          f"in torch.utils.data.DataLoader.")
    # NOTE: not ``iter(batches) is batches``: a DataLoader's iterator draws a seed from the global RNG
    # (or advances the loader's generator) and starts its worker processes.
    if isinstance(batches, Iterator) and (config.epochs > 1 or label != "data"):
        raise ConfigError(f"train: '{label}' is a one-pass iterator ({type(batches).__name__}); "
                          f"expected something that can be iterated every epoch. Fix: pass a "
                          f"DataLoader or a list of batches.")


def _warn_dropped(rounds: int, length: int | None, config: TrainConfig, world_size: int) -> None:
    """Warn when sharding by whole rounds leaves batches of every epoch untrained (and no
    ``max_steps_per_epoch`` stops the epoch before them anyway)."""
    dropped = (length or 0) - rounds * world_size
    cap = config.max_steps_per_epoch
    if dropped <= 0 or rounds == 0 or (cap is not None and cap < rounds):
        return
    warnings.warn(f"train: the data has {length} batches per epoch and no DistributedSampler, so the {world_size} "
                  f"processes take its batches in turn and the last {dropped} batch(es) of every epoch, short of a "
                  f"full round, are never trained on. Fix: give the DataLoader a DistributedSampler, or make the "
                  f"number of batches a multiple of {world_size}.", stacklevel=4)


def _check_not_empty(label: str, batches: Iterable[Any] | None) -> None:
    """Evaluation data without a batch fails only when it is evaluated, after an epoch of training."""
    if batches is None:
        return
    length = _length(batches)
    if length is None:
        length = 0 if next(iter(batches), _END) is _END else 1
    if length == 0:
        raise DataError(f"train: '{label}' yields no batches; expected at least one to evaluate on. Fix: pass "
                        f"a non-empty loader (a DataLoader with drop_last=True yields nothing when the data "
                        f"has fewer samples than batch_size: use drop_last=False or a smaller batch_size).")


def _check_steps(steps: int | None, config: TrainConfig, sharded: bool, length: int | None,
                 world_size: int) -> None:
    """An epoch needs at least one step, and schedules and sharding need the number of steps per
    epoch; say how to give it. ``length`` is the data's ``len()`` before sharding and the cap."""
    if steps == 0:
        # NOTE: training on nothing would report a train_loss of 0.0 for every epoch.
        why = (f"{length} batch(es) for {world_size} processes (each takes every {world_size}-th)"
               if sharded and length else "no batches")
        raise DataError(f"train: 'data' yields {why}; expected at least one training step per epoch. Fix: "
                        f"pass a non-empty loader (a DataLoader with drop_last=True yields nothing when the "
                        f"data has fewer samples than batch_size: use drop_last=False or a smaller batch_size).")
    if steps is not None:
        return
    if config.scheduler != "none" or config.warmup_epochs > 0:
        raise ConfigError(f"train: scheduler={config.scheduler!r} / warmup_epochs="
                          f"{config.warmup_epochs} need the number of steps per epoch, but the data "
                          f"has no len(). Fix: set max_steps_per_epoch, or pass a DataLoader over a "
                          f"map-style dataset.")
    if sharded:
        raise ConfigError("train: under torchrun the data has no len() and no DistributedSampler, so "
                          "the ranks cannot agree on a number of steps. Fix: set "
                          "max_steps_per_epoch, or use a DataLoader with a DistributedSampler.")
