"""The one-shot methods by name: each is ``prune(W[out, in], stats, *, sparsity, pattern,
blocksize, percdamp) -> Ŵ[out, in]``; ``sequential`` says whether the layers of a block are pruned
one group at a time, each calibrated on the outputs of the groups already pruned; ``needs_data``
whether a layer the calibration pass never calls can be pruned (``stats`` is then None)."""

from __future__ import annotations

import torch

from prunekit.registry import Registry
from prunekit.sparsity.oneshot.magnitude import magnitude
from prunekit.sparsity.oneshot.sparsegpt import sparsegpt
from prunekit.sparsity.oneshot.wanda import wanda

__all__ = ["METHODS"]

METHODS: Registry[torch.Tensor] = Registry(
    "one-shot method", list_hint="Known: magnitude, wanda, sparsegpt (prunekit.sparsity.oneshot.METHODS.names())"
)
# NOTE: Wanda's paper calibrates all layers of a block at once (its speed is the point);
# SparseGPT's reference prunes q/k/v, then out, then fc1, then fc2 ("sequential" within a block).
METHODS.add("magnitude", magnitude, sequential=False, needs_data=False)
METHODS.add("wanda", wanda, sequential=False, needs_data=True)
METHODS.add("sparsegpt", sparsegpt, sequential=True, needs_data=True)
