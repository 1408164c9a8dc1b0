"""One-shot calibration pruning: a trained model + a few calibration batches -> a sparse model.

In: any model whose layers are ``nn.Linear`` / HF ``Conv1D`` / ``nn.Conv2d`` and an iterable of
input batches. Out: ``OneShotResult`` (the pruned model, per-layer sparsity and reconstruction
error ``‖WX − ŴX‖/‖WX‖``). Methods: ``magnitude`` (data-free baseline), ``wanda`` (Sun et al. 2023)
and ``sparsegpt`` (Frantar & Alistarh 2023), unstructured or N:M. Sparsity is the fraction zeroed.
"""

from prunekit.sparsity.oneshot.calibrate import LayerStats
from prunekit.sparsity.oneshot.magnitude import magnitude
from prunekit.sparsity.oneshot.methods import METHODS
from prunekit.sparsity.oneshot.run import LayerReport, OneShotResult, one_shot
from prunekit.sparsity.oneshot.sparsegpt import sparsegpt
from prunekit.sparsity.oneshot.wanda import wanda

__all__ = ["one_shot", "OneShotResult", "LayerReport", "METHODS", "LayerStats", "magnitude", "wanda", "sparsegpt"]
