"""Fourier transforms (``torch.fft``): every output position along a transformed dim mixes all inputs.

Channels on a transformed dim cannot be cut (FNet's ``fftn(x, dim=(1, 2))`` over tokens and the
hidden width: removing a channel changes every frequency), so they are frozen with that reason;
the other dims pass through.
"""

from __future__ import annotations

import torch

from prunekit.graph.constraints import Tracked
from prunekit.graph.handlers.common import arg
from prunekit.graph.registry import register_rule

_ONE = ("fft", "ifft", "rfft", "irfft", "hfft", "ihfft")  # dim=-1 by default
_TWO = ("fft2", "ifft2", "rfft2", "irfft2", "hfft2", "ihfft2")  # dim=(-2, -1)
_N = ("fftn", "ifftn", "rfftn", "irfftn", "hfftn", "ihfftn")  # dim=None: the last len(s) dims, or all


def _transformed(name: str, args: tuple, kwargs: dict, ndim: int) -> set[int]:  # type: ignore[type-arg]
    """The dims a transform of ``name`` runs over."""
    dim = arg(args, kwargs, 2, "dim", None)
    if dim is None and name in _ONE:
        dim = -1
    elif dim is None and name in _TWO:
        dim = (-2, -1)
    elif dim is None:
        s = arg(args, kwargs, 1, "s", None)
        dim = tuple(range(-len(s), 0)) if s is not None else tuple(range(ndim))
    return {d % ndim for d in ([dim] if isinstance(dim, int) else dim)}


def _fourier(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    x = args[0]
    if not isinstance(x, torch.Tensor) or not isinstance(out, torch.Tensor) or out.dim() != x.dim():
        return ctx.opaque(args, kwargs, out, "unexpected Fourier transform arguments")
    dims = ctx.dims(x)
    over = _transformed(ctx.current.rpartition(".")[2].removeprefix("fft_"), args, kwargs, x.dim())
    for d in over:
        if isinstance(dims[d], Tracked):
            ctx.store.freeze(dims[d], f"channels mixed by a Fourier transform over them in {ctx.where} "
                                      f"(every frequency reads every channel: they cannot be cut)")
    ctx.set(out, [None if i in over else d for i, d in enumerate(dims)])


for _name in _ONE + _TWO + _N:
    if hasattr(torch.fft, _name):
        register_rule(getattr(torch.fft, _name))(_fourier)


@register_rule(torch.Tensor.real.__get__, torch.Tensor.imag.__get__, torch.real, torch.imag)  # type: ignore[attr-defined]
def complex_part(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """``x.real`` / ``x.imag`` of a transform's output: same shape, every dim keeps its channels."""
    ctx.set(out, ctx.dims(args[0]))
