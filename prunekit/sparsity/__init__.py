"""Unstructured, N:M and block sparsity: masks, importance, schedules, sparse storage.

In: a model (and, for data-driven importance, gradients from training or calibration batches).
Out: the same architecture with zeros in its weights (after ``finalize``), and a sparse file.

Terms used throughout: *sparsity* is the fraction of a weight's entries set to zero; a *pattern*
says which entries may be zeroed together (any, N of every M along the input dimension, or whole
blocks); a *schedule* gives the sparsity at each optimizer step; an *importance* scores each weight
(higher = keep).
"""

from prunekit.sparsity.callback import SparsityCallback as SparsityCallback
from prunekit.sparsity.importance import IMPORTANCE as IMPORTANCE
from prunekit.sparsity.importance import Evidence as Evidence
from prunekit.sparsity.masks import Mask as Mask
from prunekit.sparsity.masks import attach as attach
from prunekit.sparsity.masks import finalize as finalize
from prunekit.sparsity.oneshot import OneShotResult as OneShotResult
from prunekit.sparsity.oneshot import one_shot as one_shot
from prunekit.sparsity.patterns import Pattern as Pattern
from prunekit.sparsity.patterns import block_mask as block_mask
from prunekit.sparsity.patterns import mask_from_scores as mask_from_scores
from prunekit.sparsity.patterns import nm_mask as nm_mask
from prunekit.sparsity.patterns import topk_mask as topk_mask
from prunekit.sparsity.report import LayerSparsity as LayerSparsity
from prunekit.sparsity.report import format_report as format_report
from prunekit.sparsity.report import sparsity_report as sparsity_report
from prunekit.sparsity.schedule import SCHEDULES as SCHEDULES
from prunekit.sparsity.schedule import Constant as Constant
from prunekit.sparsity.schedule import Gradual as Gradual
from prunekit.sparsity.schedule import Iterative as Iterative
from prunekit.sparsity.schedule import OneShot as OneShot
from prunekit.sparsity.schedule import cubic_sparsity as cubic_sparsity
from prunekit.sparsity.sparsifier import Sparsifier as Sparsifier
from prunekit.sparsity.sparsifier import select_targets as select_targets
from prunekit.sparsity.storage import SparseSizes as SparseSizes
from prunekit.sparsity.storage import sparse_sizes as sparse_sizes

__all__ = [
    # masks and patterns
    "Sparsifier", "SparsityCallback", "Mask", "attach", "finalize", "select_targets", "Pattern",
    "mask_from_scores", "topk_mask", "nm_mask", "block_mask",
    # one-shot calibration (Wanda, SparseGPT)
    "one_shot", "OneShotResult",
    # importance and schedules
    "IMPORTANCE", "Evidence", "SCHEDULES", "OneShot", "Constant", "Iterative", "Gradual",
    "cubic_sparsity",
    # reports and storage
    "LayerSparsity", "sparsity_report", "format_report",
    "SparseSizes", "sparse_sizes",
]
