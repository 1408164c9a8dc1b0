"""Data as iterables of batches: what ``prunekit.recover.train`` and ``prunekit.measure.evaluate``
take besides in-memory DataSplits (a text file's token blocks, a ``load_from_disk`` folder, or a
DataSplits turned into DataLoaders with :meth:`DataSplits.loaders`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import TensorDataset

from prunekit.errors import ConfigError

__all__ = ["Loaders", "TensorBatches"]


class TensorBatches:
    """Consecutive slices of a TensorDataset's tensors, ``batch_size`` samples at a time, in order.

    Re-iterable and sized; no DataLoader, so no per-sample collation and no RNG draw (evaluation
    leaves torch's global RNG alone).
    """

    def __init__(self, dataset: TensorDataset, batch_size: int) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer; got {batch_size!r}. "
                              f"Pass e.g. 512.")
        self.dataset, self.batch_size = dataset, batch_size

    def __len__(self) -> int:
        return (len(self.dataset) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        for start in range(0, len(self.dataset), self.batch_size):
            yield tuple(t[start:start + self.batch_size] for t in self.dataset.tensors)


@dataclass(frozen=True)
class Loaders:
    """Train/val/test iterables of batches (DataLoaders) and what they are for.

    ``task`` names the task they fit ("classification", "causal_lm"); ``info`` holds facts a
    caller may need to build or check a model (``num_classes``, ``vocab_size``, ``block_size``,
    ``input_shape``...). Pass the whole object as ``data`` to ``prunekit.recover.train``.
    """

    name: str
    train: Iterable[Any]
    val: Iterable[Any] | None
    test: Iterable[Any] | None = None
    task: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
