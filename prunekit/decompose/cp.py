"""CP decomposition of a Conv2d kernel, computed by TensorLy (ALS).

Lebedev et al., "Speeding-up convolutional neural networks using fine-tuned CP-decomposition",
ICLR 2015: W[N, C, kh, kw] ~= sum_r a_N[:, r] o a_C[:, r] o a_h[:, r] o a_w[:, r], run as
1x1 Conv(C, R) -> depthwise kh x 1 -> depthwise 1 x kw -> 1x1 Conv(R, N). ALS is a fit, not a
closed form: it is exact only when the kernel's CP rank is at most R (and ALS converges).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from prunekit.decompose.layers import copy_bias, shell
from prunekit.decompose.tucker import _check_conv, _kernel, _relative_error, _tensorly
from prunekit.errors import ConfigError

__all__ = ["cp_conv", "cp_factorization"]


def cp_factorization(conv: nn.Conv2d, rank: int, *, iterations: int = 100, tol: float = 1e-10,
                     seed: int = 0) -> tuple[nn.Sequential, float]:
    """:func:`cp_conv` that also returns the kernel's relative reconstruction error."""
    _check_conv(conv, "cp_conv")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ConfigError(f"cp_conv: rank must be an int >= 1; got {rank!r}. Pass e.g. rank=16.")
    tl = _tensorly("CP decomposition")
    from tensorly.decomposition import parafac

    kernel = _kernel(conv)
    with tl.backend_context("pytorch"), warnings.catch_warnings():
        # NOTE: TensorLy warns when R exceeds a mode's size at the SVD start; that is expected.
        warnings.simplefilter("ignore", UserWarning)
        try:
            cp = parafac(kernel, rank, n_iter_max=iterations, init="svd", tol=tol,
                         random_state=seed, normalize_factors=True)
        except ValueError as exc:
            raise ConfigError(f"cp_conv: TensorLy could not fit rank {rank} to a kernel of shape "
                              f"{tuple(kernel.shape)} ({' '.join(str(exc).split())[:200]}). Pass a smaller rank, "
                              f"or method='tucker'.") from exc
    # NOTE: unit columns and the scale spread evenly over the four factors: ALS leaves them far apart
    # (1e-8 against 1e+38 seen), which float32 layers cannot hold.
    spread = cp.weights.abs().clamp_min(0) ** 0.25
    sign = torch.where(cp.weights < 0, -1.0, 1.0).to(spread)
    factors: list[torch.Tensor] = [f * spread[None, :] for f in cp.factors]
    a_out, a_in, a_h, a_w = factors
    a_out = a_out * sign[None, :]
    out = shell("cp", conv, (rank,))
    weights: list[torch.Tensor] = [layer.weight for layer in out]  # type: ignore[misc]
    with torch.no_grad():
        for weight, factor in zip(weights, (a_in.T, a_h.T, a_w.T, a_out)):
            weight.copy_(factor.reshape(weight.shape))
    built = [w.detach().double().reshape(w.shape[0], -1) for w in weights]
    if not all(bool(torch.isfinite(w).all()) for w in built):
        raise ConfigError(f"cp_conv: the rank-{rank} CP factors of a kernel of shape {tuple(kernel.shape)} do "
                          f"not fit {conv.weight.dtype} (ALS diverged). Pass a smaller rank, or method='tucker'.")
    copy_bias(out[3], conv)
    # NOTE: the error of the layers as built (their dtype), not of TensorLy's float64 fit
    approx = torch.einsum("nr,rc,rh,rw->nchw", built[3], built[0], built[1], built[2])
    return out.train(conv.training), _relative_error(kernel, approx)


def cp_conv(conv: nn.Conv2d, rank: int, *, iterations: int = 100, seed: int = 0) -> nn.Sequential:
    """Replace ``conv`` by its rank-``rank`` CP form (ALS, ``iterations`` at most, SVD start);
    ``conv`` is not changed. Exact when the kernel's CP rank is <= ``rank``; otherwise a fit."""
    return cp_factorization(conv, rank, iterations=iterations, seed=seed)[0]
