"""Unstructured, N:M and block sparsity: masks, schedules, one-shot calibration, sparse storage."""

from prunekit.sparsity.patterns import Pattern, block_mask, mask_from_scores, nm_mask, topk_mask

__all__ = ["Pattern", "block_mask", "mask_from_scores", "nm_mask", "topk_mask"]
