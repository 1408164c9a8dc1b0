"""Seeded randomness without a process-wide side effect.

Library code draws its own randomness from ``torch.Generator`` objects. Where torch offers no
generator argument (dropout, ``nn.init`` inside a model's constructor), :func:`seeded` seeds the
global RNG for one block and puts the caller's RNG state back afterwards, so a user's own random
stream continues as if prunekit had not run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["seeded"]


@contextmanager
def seeded(seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Run the block with torch's CPU RNG (and ``device``'s, if it is a CUDA device) seeded to
    ``seed``; restore the previous RNG states on exit, also after an exception."""
    cuda = device is not None and torch.device(device).type == "cuda"
    devices = [torch.device(device)] if cuda else []  # type: ignore[arg-type]
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(devices[0]):
                torch.cuda.manual_seed(seed)
        yield
