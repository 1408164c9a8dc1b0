"""Pooling, resizing and reductions: channels survive ops over other dims.

Reducing or normalising *over* channels (``x.mean(1)``, ``softmax(dim=channels)``) still follows a
pruned width, but the values change, so those channels are marked inexact rather than frozen.
"""

from __future__ import annotations

from typing import Any

import torch

from prunekit.graph.constraints import Tracked
from prunekit.graph.handlers.common import arg
from prunekit.graph.registry import register_rule, resolve

_SPATIAL = """max_pool1d max_pool2d max_pool3d avg_pool1d avg_pool2d avg_pool3d adaptive_max_pool1d
adaptive_max_pool2d adaptive_max_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d
lp_pool1d lp_pool2d lp_pool3d fractional_max_pool2d fractional_max_pool3d max_pool1d_with_indices
max_pool2d_with_indices max_pool3d_with_indices adaptive_max_pool2d_with_indices interpolate
upsample upsample_nearest upsample_bilinear grid_sample""".split()
_REDUCE = "mean sum amax amin max min std var norm logsumexp prod nansum nanmean median".split()


@register_rule(*resolve(*_SPATIAL))
def spatial(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """(N, C, *spatial) -> (N, C, *spatial'): batch and channel dims pass through."""
    x = args[0]
    dims = ctx.dims(x)
    outs = out if isinstance(out, tuple) else (out,)
    for t in outs:
        if isinstance(t, torch.Tensor):
            keep = min(t.dim(), x.dim()) - _spatial_rank(ctx.current, x.dim())
            ctx.set(t, dims[:keep] + [None] * (t.dim() - keep))


def _spatial_rank(name: str, ndim: int) -> int:
    for rank in (1, 2, 3):
        if f"{rank}d" in name:
            return rank
    return max(ndim - 2, 1)  # interpolate / grid_sample: everything after (N, C)


def _reduced(args: tuple[Any, ...], kwargs: dict[str, Any], ndim: int) -> tuple[set[int], bool]:
    dim = kwargs.get("dim", args[1] if len(args) > 1 and not isinstance(args[1], torch.Tensor) else None)
    keepdim = bool(kwargs.get("keepdim", args[2] if len(args) > 2 and isinstance(args[2], bool) else False))
    if dim is None:
        return set(range(ndim)), keepdim
    dims = [dim] if isinstance(dim, int) else list(dim)
    return {d % ndim for d in dims if isinstance(d, int)}, keepdim


@register_rule(*resolve(*_REDUCE))
def reduction(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """Reduced dims disappear (or become 1 with keepdim); reducing over channels is inexact."""
    x = args[0]
    if len(args) > 1 and isinstance(args[1], torch.Tensor):  # torch.max(a, b) is elementwise
        from prunekit.graph.handlers.elementwise import elementwise

        return elementwise(ctx, args, kwargs, out)
    dims = ctx.dims(x)
    reduced, keepdim = _reduced(args, kwargs, x.dim())
    for d in reduced:
        if isinstance(dims[d], Tracked):
            ctx.store.inexact(dims[d], f"reduced over by {ctx.where}",
                              zero_safe=ctx.current.endswith(("sum", "nansum")))
    kept = [None if i in reduced else d for i, d in enumerate(dims)] if keepdim else \
        [d for i, d in enumerate(dims) if i not in reduced]
    for t in (out if isinstance(out, tuple) else (out,)):
        if isinstance(t, torch.Tensor):
            ctx.set(t, kept if t.dim() == len(kept) else [None] * t.dim())


@register_rule(*resolve("softmax", "log_softmax", "softmin", "normalize", "cumsum", "cumprod",
                        "local_response_norm"))
def along_dim(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """Same shape out; values along ``dim`` are mixed (inexact when that dim holds channels)."""
    x = args[0]
    dims = ctx.dims(x)
    default = 1 if ctx.current.endswith(("normalize", "local_response_norm")) else -1
    dim = kwargs.get("dim", args[1] if len(args) > 1 and isinstance(args[1], int) else default)
    if dim is not None and isinstance(dims[dim % x.dim()], Tracked):
        ctx.store.inexact(dims[dim % x.dim()], f"values mixed along channels by {ctx.where}")
    ctx.set(out, dims)


@register_rule(*resolve("pad"))
def pad(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """F.pad pads trailing dims; padding a channel dim freezes it."""
    x, pads = args[0], kwargs.get("pad", args[1] if len(args) > 1 else ())
    dims = ctx.dims(x)
    touched = {x.dim() - 1 - i // 2 for i, p in enumerate(pads) if p}
    result = list(dims)
    for d in touched:
        if isinstance(dims[d], Tracked):
            ctx.store.freeze(dims[d], f"channels padded by {ctx.where}")
        result[d] = None
    ctx.set(out, result)


@register_rule(*resolve("topk", "sort", "argsort", "msort"))
def ranking(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """Values ranked along ``dim``: the other dims pass through; channels on ``dim`` are frozen, since
    which ones are chosen depends on every one of them (an MoE router's ``topk`` over its experts)."""
    x = args[0]
    default = 0 if ctx.current.endswith("msort") else -1
    dim = arg(args, kwargs, 2 if ctx.current.endswith("topk") else 1, "dim", default)
    dims = ctx.dims(x)
    at = dim % max(x.dim(), 1) if isinstance(dim, int) and x.dim() else None
    if at is not None and isinstance(dims[at], Tracked):
        ctx.store.freeze(dims[at], f"channels ranked by {ctx.where}: which are chosen depends on every one")
    result = [None if i == at else d for i, d in enumerate(dims)]
    for t in (out if isinstance(out, tuple) else (out,)):
        if isinstance(t, torch.Tensor):
            ctx.set(t, result if t.dim() == len(result) else [None] * t.dim())
