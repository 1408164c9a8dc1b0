"""The data contract shared by every dataset: three tensor splits and a fast, seeded batch loader."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, TensorDataset

from prunekit.data.loaders import Loaders
from prunekit.errors import ConfigError

__all__ = ["DataSplits", "make_loader", "set_epoch", "split_indices"]


@dataclass(frozen=True)
class DataSplits:
    """A dataset ready for training: train/val/test ``TensorDataset``s of (inputs, labels).

    Inputs are float32 ``[N, C, H, W]`` (or ``[N, F]``), already normalised; labels are int64 ``[N]``.
    """

    name: str
    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    num_classes: int
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...] = ()
    # NOTE: how raw inputs became these tensors, for code that repeats it outside prunekit (an edge
    # bundle): inputs = (raw - mean) / std per channel, raw = 8-bit pixel * pixel_scale for images
    # (None: not decoded from 8-bit pixels). Empty / None when unknown.
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    pixel_scale: float | None = None

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        """The first ``batch_size`` test inputs, for tracing and profiling."""
        return self.test.tensors[0][:batch_size].clone()

    def in_class_order(self, names: Sequence[str]) -> DataSplits | None:
        """These splits with label ``i`` meaning ``names[i]`` (a model's own label order), or None
        where ``names`` are not this data's class names (compared without case, ``_`` or ``-``)."""
        mine = [_label_key(n) for n in self.class_names]
        theirs = [_label_key(n) for n in names]
        if not mine or sorted(mine) != sorted(theirs) or len(set(mine)) != len(mine):
            return None
        if mine == theirs:
            return self
        new_label = torch.tensor([theirs.index(key) for key in mine])

        def relabelled(split: TensorDataset) -> TensorDataset:
            inputs, labels = split.tensors[0], split.tensors[1]
            return TensorDataset(inputs, new_label[labels], *split.tensors[2:])

        ordered = tuple(self.class_names[mine.index(key)] for key in theirs)
        return replace(self, train=relabelled(self.train), val=relabelled(self.val), test=relabelled(self.test),
                       class_names=ordered)

    def standardised_as(self, mean: Sequence[float], std: Sequence[float], pixel_scale: float | None) -> DataSplits:
        """These inputs standardised as a model was trained to read them (``(raw - mean) / std``, raw
        = pixel * ``pixel_scale``: the statistics its data had), not with this data's own statistics.
        Unchanged where they already agree, where the channel counts differ, or where this data's raw
        values are not comparable (one side decoded from pixels, the other not, or nothing known)."""
        mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        if not self.mean or len(mean) != len(self.mean) or len(std) != len(self.std):
            return self
        if (pixel_scale is None) != (self.pixel_scale is None):
            return self
        if (mean, std, pixel_scale) == (self.mean, self.std, self.pixel_scale):
            return self
        # NOTE: pixel = (x * s1 + m1) / p1 and x0 = (pixel * p0 - m0) / s0, per channel
        ratio = (pixel_scale / self.pixel_scale) if pixel_scale is not None and self.pixel_scale else 1.0
        shape = [1, len(mean)] + [1] * (len(self.input_shape) - 1)
        m1, s1 = torch.tensor(self.mean).reshape(shape), torch.tensor(self.std).reshape(shape)
        m0, s0 = torch.tensor(mean).reshape(shape), torch.tensor(std).reshape(shape)
        scale, shift = s1 * ratio / s0, (m1 * ratio - m0) / s0

        def again(split: TensorDataset) -> TensorDataset:
            return TensorDataset(torch.addcmul(shift, split.tensors[0], scale), *split.tensors[1:])

        return replace(self, train=again(self.train), val=again(self.val), test=again(self.test),
                       mean=mean, std=std, pixel_scale=pixel_scale)

    def loaders(self, batch_size: int = 64, *, seed: int = 0, eval_batch_size: int = 512) -> Loaders:
        """The three splits as DataLoaders of ``(inputs, labels)`` batches (train shuffled by
        ``seed`` and the epoch, see :func:`make_loader`); for code that takes any iterable."""
        train = make_loader(self.train, batch_size=batch_size, shuffle=True, seed=seed)
        val = make_loader(self.val, batch_size=eval_batch_size, shuffle=False)
        test = make_loader(self.test, batch_size=eval_batch_size, shuffle=False)
        return Loaders(name=self.name, train=train, val=val, test=test, task="classification",
                       info={"num_classes": self.num_classes, "input_shape": self.input_shape,
                             "class_names": self.class_names})


def _label_key(name: str) -> str:
    """A class name as label matching compares it: ``"Golden_Retriever"`` is ``"golden retriever"``, and
    ``"éclair"`` typed (NFC) is ``"éclair"`` from a folder copied through macOS (NFD)."""
    # NOTE: NFC after casefold too: casefolding can leave a string that is no longer normalised
    folded = unicodedata.normalize("NFC", unicodedata.normalize("NFC", str(name)).casefold())
    return " ".join(folded.replace("_", " ").replace("-", " ").split())


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic (train, val) index split of ``range(n)``; the same seed gives the same split."""
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(
            f"val_fraction must be in [0, 1); got {val_fraction}. Pass e.g. 0.1 to hold out 10 %."
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = int(round(n * val_fraction))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def make_loader(dataset: TensorDataset, *, batch_size: int, shuffle: bool, seed: int = 0,
                drop_last: bool = False, num_replicas: int = 1, rank: int = 0) -> DataLoader:
    """A loader that indexes the tensors a whole batch at a time (no per-sample collate).

    Shuffling is a pure function of ``(seed, epoch)`` (call :func:`set_epoch` each epoch), so a
    resumed run sees the same batches as an uninterrupted one. With ``num_replicas > 1`` each rank
    gets its own shard, as DistributedDataParallel expects.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer; got {batch_size}. Pass e.g. 64.")
    sampler: DistributedSampler[int] = DistributedSampler(dataset, num_replicas=num_replicas, rank=rank,
                                                          shuffle=shuffle, seed=seed, drop_last=drop_last)
    return DataLoader(dataset, sampler=BatchSampler(sampler, batch_size, drop_last), batch_size=None)


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Reseed the loader's shuffle for ``epoch`` when its sampler (or its batch sampler's) is a
    DistributedSampler; a no-op for other loaders."""
    for owner in (loader, getattr(loader, "batch_sampler", None)):
        sampler = getattr(owner, "sampler", None)
        for candidate in (sampler, getattr(sampler, "sampler", None)):
            if isinstance(candidate, DistributedSampler):
                candidate.set_epoch(epoch)
