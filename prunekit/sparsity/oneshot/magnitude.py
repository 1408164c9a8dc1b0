"""Magnitude pruning, the data-free baseline: zero the smallest ``|W|`` of each layer."""

from __future__ import annotations

import torch

from prunekit.sparsity.oneshot.calibrate import LayerStats
from prunekit.sparsity.patterns import Pattern, mask_from_scores

__all__ = ["magnitude"]


def magnitude(weight: torch.Tensor, stats: LayerStats | None, *, sparsity: float, pattern: Pattern,
              **_: object) -> torch.Tensor:
    """``W[out, in]`` with the lowest-``|W|`` entries zeroed, ranked over the whole layer
    (the layer-wise baseline of the Wanda and SparseGPT papers); N:M ranks inside each group."""
    return weight * mask_from_scores(weight.abs(), sparsity, pattern)
