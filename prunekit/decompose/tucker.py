"""Tucker-2 decomposition of a Conv2d kernel, computed by TensorLy.

Tucker-2 (Kim et al., "Compression of deep convolutional neural networks for fast and low power
mobile applications", ICLR 2016): W[N, C, kh, kw] ~= core[r_out, r_in, kh, kw] x_0 U_out x_1 U_in,
run as 1x1 Conv(C, r_in) -> k x k Conv(r_in, r_out) -> 1x1 Conv(r_out, N).
Computed with TensorLy's PyTorch backend in float64 (HOSVD start, then a few HOOI iterations).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from prunekit.decompose.layers import copy_bias, shell
from prunekit.decompose.rank import Spectrum
from prunekit.errors import ConfigError, require

__all__ = ["tucker2_conv", "tucker2_factorization", "unfolding_spectra"]


def _tensorly(feature: str):  # noqa: ANN202 - a module
    return require("tensorly", extra="decompose", feature=feature)


def _check_conv(conv: nn.Module, where: str) -> None:
    if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
        got = type(conv).__name__ + (f" with groups={conv.groups}" if isinstance(conv, nn.Conv2d) else "")
        raise ConfigError(f"{where}: expected an nn.Conv2d with groups=1; got {got}. Grouped and "
                          f"depthwise convs are left alone by decompose.")


def _kernel(conv: nn.Conv2d) -> torch.Tensor:
    return conv.weight.detach().double().cpu()


def _relative_error(kernel: torch.Tensor, approx: torch.Tensor) -> float:
    return float(torch.linalg.norm(kernel - approx) / torch.linalg.norm(kernel).clamp_min(1e-30))


def unfolding_spectra(conv: nn.Conv2d) -> tuple[Spectrum, Spectrum]:
    """Singular values of the kernel's input-channel and output-channel unfoldings (r_in, r_out axes)."""
    w = conv.weight.detach().double()
    n, c = w.shape[:2]
    by_out = w.reshape(n, -1)
    by_in = w.transpose(0, 1).reshape(c, -1)
    return (Spectrum(torch.linalg.svdvals(by_in), *by_in.shape),
            Spectrum(torch.linalg.svdvals(by_out), *by_out.shape))


def tucker2_factorization(conv: nn.Conv2d, ranks: Sequence[int]) -> tuple[nn.Sequential, float]:
    """:func:`tucker2_conv` that also returns the kernel's relative reconstruction error."""
    _check_conv(conv, "tucker2_conv")
    r_in, r_out = (int(r) for r in ranks)
    n, c = conv.out_channels, conv.in_channels
    if not (1 <= r_in <= c and 1 <= r_out <= n):
        raise ConfigError(f"tucker2_conv: ranks (r_in, r_out) must be within (1..{c}, 1..{n}) for a "
                          f"{tuple(conv.weight.shape)} kernel; got {tuple(ranks)}. "
                          f"Pass e.g. ({max(1, c // 2)}, {max(1, n // 2)}).")
    tl = _tensorly("Tucker-2 decomposition")
    from tensorly.decomposition import partial_tucker

    kernel = _kernel(conv)
    with tl.backend_context("pytorch"):
        (core, (u_out, u_in)), _ = partial_tucker(kernel, rank=[r_out, r_in], modes=[0, 1], init="svd",
                                                  n_iter_max=20, tol=1e-6)
        approx = tl.tenalg.multi_mode_dot(core, [u_out, u_in], modes=[0, 1])
    out = shell("tucker2", conv, (r_in, r_out))
    with torch.no_grad():
        out[0].weight.copy_(u_in.T.reshape(out[0].weight.shape))
        out[1].weight.copy_(core)
        out[2].weight.copy_(u_out.reshape(out[2].weight.shape))
    copy_bias(out[2], conv)
    return out.train(conv.training), _relative_error(kernel, approx)


def tucker2_conv(conv: nn.Conv2d, ranks: Sequence[int]) -> nn.Sequential:
    """Replace ``conv`` by its Tucker-2 form at ``ranks`` = (r_in, r_out); ``conv`` is not changed.

    At full ranks (C, N) the result gives the same outputs as ``conv`` (up to float rounding).
    """
    return tucker2_factorization(conv, ranks)[0]
