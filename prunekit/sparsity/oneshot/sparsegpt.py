"""SparseGPT: one-shot pruning with OBS reconstruction (Frantar & Alistarh, 2023, arXiv:2301.00774).

For a layer ``W[out, in]`` with calibration inputs ``X[in, tokens]``, the layer-wise objective
``‖WX − ŴX‖²`` has Hessian ``H = 2XXᵀ``, dampened to ``H + λI`` with ``λ = percdamp · mean(diag H)``.
With ``U`` the upper Cholesky factor of ``H⁻¹`` (``UᵀU = H⁻¹``), columns are pruned left to
right: removing entries of column j costs ``w²/U_jj²`` (the OBS saliency) and is compensated by
the update ``W[:, j:] -= (w − q)/U_jj · U[j, j:]`` of the columns not yet processed. Columns go in
blocks of ``blocksize``: a block's mask is chosen when the block starts, as the lowest saliencies
over the whole block ("adaptive mask selection"); inside the block updates are exact, and the
columns after it receive one batched ("lazy") update per block. For N:M the mask is chosen every
M columns, on the updated weights: the M − N lowest saliencies of each row's group go.
"""

from __future__ import annotations

import torch

from prunekit.errors import ConfigError
from prunekit.sparsity.oneshot.calibrate import LayerStats
from prunekit.sparsity.patterns import Pattern

__all__ = ["sparsegpt", "inverse_hessian_factor"]


def inverse_hessian_factor(stats: LayerStats, percdamp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U, dead)``: the upper Cholesky factor of the dampened ``H⁻¹`` (float32, ``[in, in]``) and
    the inputs that were always zero (``Tensor[in]`` of bool; their weights cost nothing to prune)."""
    hessian = stats.gram.double() * (2.0 / max(stats.tokens, 1))
    dead = hessian.diagonal() == 0
    hessian[dead, dead] = 1.0
    damp = percdamp * hessian.diagonal().mean().item()
    eye = torch.eye(hessian.shape[0], dtype=hessian.dtype, device=hessian.device)
    for _ in range(6):
        chol, info = torch.linalg.cholesky_ex(hessian + damp * eye)
        if int(info) == 0:
            inverse = torch.cholesky_inverse(chol)
            upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
            if int(info) == 0:
                return upper.float(), dead
        # NOTE: an ill-conditioned H (few tokens, duplicated features) needs more dampening.
        damp = max(damp * 10.0, 1e-6 * hessian.diagonal().mean().item())
    raise ConfigError(
        f"sparsegpt: the layer's Hessian is not positive definite even with dampening {damp:.3g}; "
        "pass more calibration data or a larger percdamp (e.g. 0.1)"
    )


def _smallest(values: torch.Tensor, count: int) -> torch.Tensor:
    """Boolean mask of the ``count`` smallest entries of a 1-D tensor."""
    mask = torch.zeros_like(values, dtype=torch.bool)
    if count > 0:
        # NOTE: topk, not a full sort: this runs once per column block on out x blocksize scores.
        mask[torch.topk(values, count, largest=False, sorted=False).indices] = True
    return mask


def sparsegpt(weight: torch.Tensor, stats: LayerStats | None, *, sparsity: float, pattern: Pattern,
              blocksize: int = 128, percdamp: float = 0.01, **_: object) -> torch.Tensor:
    """``W[out, in]`` pruned to ``sparsity`` (or N:M) with the remaining weights updated to
    reconstruct the layer's output on the calibration inputs (float32)."""
    if stats is None:
        raise ValueError("sparsegpt needs calibration statistics")
    if pattern.kind == "block":
        raise ConfigError(f"sparsegpt: pattern '{pattern}' is not supported; expected 'unstructured' or N:M "
                          "such as '2:4'. Use method='wanda' or 'magnitude' for block sparsity.")
    W = weight.detach().float().clone()
    cols = W.shape[1]
    U, dead = inverse_hessian_factor(stats, percdamp)
    nm = pattern.kind == "nm"
    n, m = pattern.n, pattern.m
    # NOTE: N:M groups must not straddle two blocks.
    step = max(m, blocksize - blocksize % m) if nm else blocksize
    for i1 in range(0, cols, step):
        i2 = min(i1 + step, cols)
        W1 = W[:, i1:i2].clone()
        U1 = U[i1:i2, i1:i2]
        diag = U1.diagonal()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        if nm:
            prune = torch.zeros_like(W1, dtype=torch.bool)
        else:
            saliency = (W1 / diag).square()
            saliency[:, dead[i1:i2]] = 0
            prune = _smallest(saliency.flatten(), int(round(sparsity * W1.numel()))).view_as(W1)
        for j in range(i2 - i1):
            if nm and j % m == 0:
                group = (W1[:, j:j + m] / diag[j:j + m]).square()
                group[:, dead[i1 + j:i1 + j + m]] = 0
                order = torch.argsort(group, dim=1, stable=True)
                prune[:, j:j + m].scatter_(1, order[:, :m - n], True)
            w = W1[:, j]
            q = w.masked_fill(prune[:, j], 0.0)
            err = (w - q) / diag[j]
            W1[:, j + 1:] -= err.unsqueeze(1) * U1[j, j + 1:].unsqueeze(0)
            Q1[:, j] = q
            Err1[:, j] = err
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    return W
