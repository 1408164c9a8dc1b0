"""Decomposition: low-rank factorised layers (SVD, Tucker-2, CP) and partitioning a model into stages.

In: a model, an example input (and, for activation-aware SVD, calibration batches). Out: the same
model with chosen nn.Linear / nn.Conv2d (and transformers' Conv1D) layers replaced by
``nn.Sequential``s of smaller standard layers (:func:`decompose`), which prunekit.save records and
prunekit.load rebuilds; or the same model split into K sequential stages (:func:`partition`) that
run as a pipeline over processes.
*Rank* is the inner width of a factorisation; *energy* is the fraction of squared singular values
kept; a ``Target(macs=...)`` is the fraction of the model's MACs to keep.
"""

from prunekit.decompose.cp import cp_conv as cp_conv
from prunekit.decompose.lowrank import DecomposeOptions as DecomposeOptions
from prunekit.decompose.lowrank import DecomposeResult as DecomposeResult
from prunekit.decompose.lowrank import LayerRecord as LayerRecord
from prunekit.decompose.lowrank import decompose as decompose
from prunekit.decompose.methods import METHODS as METHODS
from prunekit.decompose.methods import Method as Method
from prunekit.decompose.partition import Partition as Partition
from prunekit.decompose.partition import load_partition as load_partition
from prunekit.decompose.partition import partition as partition
from prunekit.decompose.partition_cuts import best_cuts as best_cuts
from prunekit.decompose.pipelined import PipelineRun as PipelineRun
from prunekit.decompose.pipelined import run_pipeline as run_pipeline
from prunekit.decompose.svd import factorize_linear as factorize_linear
from prunekit.decompose.svd import svd_conv as svd_conv
from prunekit.decompose.tucker import tucker2_conv as tucker2_conv
from prunekit.decompose.vbmf import evbmf_rank as evbmf_rank

__all__ = [
    # the model-level call and its result
    "decompose", "DecomposeResult", "DecomposeOptions", "LayerRecord",
    # one layer at a time
    "factorize_linear", "svd_conv", "tucker2_conv", "cp_conv", "evbmf_rank",
    # methods by name
    "METHODS", "Method",
    # partitioning into pipeline stages
    "partition", "Partition", "load_partition", "best_cuts", "run_pipeline", "PipelineRun",
]
