"""Wanda: pruning by weights and activations (Sun, Liu, Bair & Kolter, 2023, arXiv:2306.11695).

Each weight scores ``S_ij = |W_ij| · ‖X_j‖₂``, where ``‖X_j‖₂`` is the norm of input feature j
over all calibration tokens. Scores are compared within each output row ("per-output
comparison group"), and the weights are not updated: no second-order information is needed.
"""

from __future__ import annotations

import torch

from prunekit.sparsity.oneshot.calibrate import LayerStats
from prunekit.sparsity.patterns import Pattern, mask_from_scores

__all__ = ["wanda", "wanda_scores", "row_topk_mask"]


def wanda_scores(weight: torch.Tensor, column_norms: torch.Tensor) -> torch.Tensor:
    """``|W| · ‖X_j‖₂`` for ``W[out, in]`` and the input features' norms ``Tensor[in]``."""
    return weight.abs() * column_norms.to(weight.dtype).unsqueeze(0)


def row_topk_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep the ``in - round(sparsity · in)`` highest scores of every row (stable on ties)."""
    rows, cols = scores.shape
    keep = cols - int(round(sparsity * cols))
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    mask = torch.zeros_like(scores, dtype=torch.bool)
    mask.scatter_(1, order[:, :keep], True)
    return mask


def wanda(weight: torch.Tensor, stats: LayerStats | None, *, sparsity: float, pattern: Pattern,
          **_: object) -> torch.Tensor:
    """``W[out, in]`` pruned by Wanda's score: per output row for unstructured sparsity, inside
    each group for N:M, over the layer for blocks."""
    if stats is None:
        raise ValueError("wanda needs calibration statistics")
    scores = wanda_scores(weight, stats.column_norms)
    if pattern.kind == "unstructured":
        return weight * row_topk_mask(scores, sparsity)
    return weight * mask_from_scores(scores, sparsity, pattern)
