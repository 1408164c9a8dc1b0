"""Truncated SVD of a Linear (or a conv kernel as an N x C*k*k matrix), plain or activation-aware.

Plain: W ~= U_r S_r V_r^T, split as (U_r S_r^1/2)(S_r^1/2 V_r^T) so both factors train alike.

Activation-aware (SVD-LLM, Wang et al. 2024; in the spirit of ASVD, Yuan et al. 2023): with the
calibration inputs X (rows = samples) the output error is ||(W - W') X^T|| = ||(W - W') L|| where
L L^T = X^T X (Cholesky). So SVD of W L is truncated instead, and W' = U_r S_r V_r^T L^-1.
X^T X is singular when an input feature is constant or features are collinear; it is damped to
X^T X + damping * mean(diag) * I first (the damping is raised until Cholesky succeeds).
"""

from __future__ import annotations

import torch
from torch import nn

from prunekit.decompose.layers import copy_bias, shell
from prunekit.decompose.rank import Spectrum
from prunekit.errors import ConfigError

__all__ = ["factorize_linear", "svd_conv", "whitening", "matrix_of", "svd_spectrum"]


def matrix_of(module: nn.Module) -> torch.Tensor:
    """The weight as a float64 out x in matrix (a conv kernel flattened to N x C*kh*kw)."""
    w = module.weight.detach().double()
    return w.reshape(w.shape[0], -1)


def whitening(gram: torch.Tensor, damping: float = 0.01) -> torch.Tensor:
    """Lower-triangular L with L L^T = gram + damping * mean(diag(gram)) * I (float64)."""
    g = gram.double()
    g = (g + g.T) / 2
    scale = float(torch.diagonal(g).mean().clamp_min(1e-12))
    eye = torch.eye(g.shape[0], dtype=g.dtype, device=g.device)
    lam = max(damping, 0.0)
    for _ in range(12):
        chol, info = torch.linalg.cholesky_ex(g + lam * scale * eye)
        if int(info) == 0:
            return chol
        lam = max(lam * 10, 1e-8)
    raise ConfigError("whitening: the calibration Gram matrix is not positive definite even with "
                      f"damping {lam:g}. Check that the calibration batches are finite and non-empty.")


def svd_spectrum(module: nn.Module, chol: torch.Tensor | None = None) -> Spectrum:
    """Singular values of the weight matrix (of W L when a whitening factor ``chol`` is given)."""
    w = matrix_of(module)
    if chol is not None:
        w = w @ chol.to(w.device)
    return Spectrum(torch.linalg.svdvals(w), w.shape[0], w.shape[1])


def _factors(w: torch.Tensor, rank: int, chol: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(A [out, r], B [r, in], relative error) with W ~= A B (error in the whitened norm if chol)."""
    target = w @ chol if chol is not None else w
    u, s, vh = torch.linalg.svd(target, full_matrices=False)
    root = s[:rank].sqrt()
    a, b = u[:, :rank] * root, root[:, None] * vh[:rank]
    error = float(torch.linalg.norm(target - a @ b) / torch.linalg.norm(target).clamp_min(1e-30))
    if chol is not None:
        b = torch.linalg.solve_triangular(chol, b, upper=False, left=False)  # b L^-1
    return a, b, error


def _check_rank(module: nn.Module, rank: int, full: int, where: str) -> None:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ConfigError(f"{where}: rank must be an int >= 1; got {rank!r}. Pass e.g. rank={max(1, full // 2)}.")
    if rank > full:
        raise ConfigError(f"{where}: rank {rank} exceeds the full rank {full} of the "
                          f"{tuple(module.weight.shape)} weight. Pass a rank <= {full}.")


def linear_factorization(linear: nn.Linear, rank: int, *,
                         chol: torch.Tensor | None = None) -> tuple[nn.Sequential, float]:
    """:func:`factorize_linear` that also returns the relative reconstruction error."""
    w = matrix_of(linear)
    _check_rank(linear, rank, min(w.shape), "factorize_linear")
    a, b, error = _factors(w, rank, None if chol is None else chol.to(w.device))
    out = shell("svd", linear, (rank,))
    with torch.no_grad():
        out[0].weight.copy_(b)
        out[1].weight.copy_(a)
    copy_bias(out[1], linear)
    return out.train(linear.training), error


def factorize_linear(linear: nn.Linear, rank: int, *, gram: torch.Tensor | None = None,
                     damping: float = 0.01) -> nn.Sequential:
    """Replace ``linear`` by Linear(in, rank) -> Linear(rank, out) from its truncated SVD.

    With ``gram`` (X^T X of calibration inputs, [in, in]) the SVD is activation-aware (SVD-LLM
    whitening): it minimises the output error on those inputs rather than the weight error.
    ``linear`` is not changed.
    """
    if not isinstance(linear, nn.Linear):
        raise ConfigError(f"factorize_linear: expected an nn.Linear; got {type(linear).__name__}. "
                          f"Use svd_conv, tucker2_conv or cp_conv for nn.Conv2d.")
    chol = whitening(gram, damping) if gram is not None else None
    return linear_factorization(linear, rank, chol=chol)[0]


def conv_factorization(conv: nn.Conv2d, rank: int) -> tuple[nn.Sequential, float]:
    """:func:`svd_conv` that also returns the relative reconstruction error."""
    w = matrix_of(conv)
    _check_rank(conv, rank, min(w.shape), "svd_conv")
    a, b, error = _factors(w, rank, None)
    out = shell("svd", conv, (rank,))
    with torch.no_grad():
        out[0].weight.copy_(b.reshape(out[0].weight.shape))
        out[1].weight.copy_(a.reshape(out[1].weight.shape))
    copy_bias(out[1], conv)
    return out.train(conv.training), error


def svd_conv(conv: nn.Conv2d, rank: int) -> nn.Sequential:
    """Replace a (groups=1) ``conv`` by k x k Conv(C, rank) -> 1x1 Conv(rank, N) from the SVD of
    its N x C*k*k kernel matrix; on a 1x1 conv this is exactly Tucker-2. ``conv`` is not changed."""
    if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
        raise ConfigError(f"svd_conv: expected an nn.Conv2d with groups=1; got "
                          f"{type(conv).__name__}"
                          f"{f' with groups={conv.groups}' if isinstance(conv, nn.Conv2d) else ''}. "
                          f"Grouped and depthwise convs are left alone by decompose.")
    return conv_factorization(conv, rank)[0]
