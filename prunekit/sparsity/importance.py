"""Per-weight importance for sparsity: pure functions ``(Evidence) -> Tensor`` (higher = keep).

An importance function sees one parameter at a time through :class:`Evidence`: its current
(masked) weight and, for those registered with ``needs_gradients=True``, gradient statistics the
sparsifier accumulated over the optimizer steps so far. New ones register by name in
:data:`IMPORTANCE`::

    @IMPORTANCE.register("my_score", needs_gradients=False)
    def my_score(evidence): return evidence.weight.abs() ** 2
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from prunekit.errors import ConfigError
from prunekit.registry import Registry

__all__ = ["Evidence", "IMPORTANCE", "Importance", "magnitude", "random", "taylor", "movement"]


@dataclass(frozen=True)
class Evidence:
    """What an importance function may read about one parameter (all tensors have the parameter's shape).

    Attributes:
        name: the parameter's name, e.g. ``"features.0.weight"``.
        weight: the current weight, with pruned entries already zero.
        taylor: sum over steps of ``(w * dL/dw) ** 2``, or None when gradients were not tracked.
        movement: sum over steps of ``-w * dL/dw``, or None when gradients were not tracked.
        seed: the sparsifier's seed (for random scores).
        step: the step at which the masks are being recomputed.
    """

    name: str
    weight: torch.Tensor
    taylor: torch.Tensor | None = None
    movement: torch.Tensor | None = None
    seed: int = 0
    step: int = 0


Importance = Callable[[Evidence], torch.Tensor]

IMPORTANCE: Registry[torch.Tensor] = Registry(
    "sparsity importance", list_hint="Known: magnitude, random, taylor, movement")


def _needs(evidence: Evidence, field: str) -> torch.Tensor:
    value = getattr(evidence, field)
    if value is None:
        raise ConfigError(
            f"importance '{field}' needs gradients of '{evidence.name}', but none were seen. Call "
            f"sparsifier.step() after loss.backward() and optimizer.step() in the training loop, "
            f"or sparsifier.accumulate(batches) before a one-shot apply()."
        )
    return value


@IMPORTANCE.register("magnitude", needs_gradients=False)
def magnitude(evidence: Evidence) -> torch.Tensor:
    """``|w|`` (L1 magnitude): the classic baseline of Han et al. (2015) and Zhu & Gupta (2017)."""
    return evidence.weight.detach().abs()


@IMPORTANCE.register("random", needs_gradients=False)
def random(evidence: Evidence) -> torch.Tensor:
    """Uniform noise from a generator seeded by ``(seed, name, step)``: the control every
    importance should beat. Deterministic; the global RNG is untouched."""
    seed = (evidence.seed * 1_000_003 + zlib.crc32(evidence.name.encode()) * 7_919 + evidence.step)
    generator = torch.Generator().manual_seed(seed % (2**63))
    return torch.rand(evidence.weight.shape, generator=generator).to(evidence.weight.device)


@IMPORTANCE.register("taylor", needs_gradients=True)
def taylor(evidence: Evidence) -> torch.Tensor:
    """Accumulated ``(w * g) ** 2``: the first-order Taylor estimate of the loss change from
    removing each weight (Molchanov et al., 2019, "Importance Estimation for Neural Network
    Pruning"), summed over the steps seen."""
    return _needs(evidence, "taylor")


@IMPORTANCE.register("movement", needs_gradients=True)
def movement(evidence: Evidence) -> torch.Tensor:
    """Accumulated ``-w * g`` (Sanh et al., 2020, "Movement Pruning"): weights moving away from
    zero during training score high, those shrinking towards zero score low."""
    return _needs(evidence, "movement")
