"""Pooling, resizing and reductions: channels survive ops over other dims.

Reducing or normalising *over* channels (``x.mean(1)``, ``softmax(dim=channels)``) still follows a
pruned width, but the values change, so those channels are marked inexact rather than frozen.
"""

from __future__ import annotations

from typing import Any

import torch

from prunekit.graph.constraints import Tracked
from prunekit.graph.handlers.common import arg, read_as_data
from prunekit.graph.registry import RULES, register_rule, resolve

_SPATIAL = """max_pool1d max_pool2d max_pool3d avg_pool1d avg_pool2d avg_pool3d adaptive_max_pool1d
adaptive_max_pool2d adaptive_max_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d
lp_pool1d lp_pool2d lp_pool3d fractional_max_pool2d fractional_max_pool3d max_pool1d_with_indices
max_pool2d_with_indices max_pool3d_with_indices adaptive_max_pool2d_with_indices interpolate
upsample upsample_nearest upsample_bilinear grid_sample max_unpool1d max_unpool2d max_unpool3d""".split()
_REDUCE = """mean sum amax amin max min std var logsumexp prod nansum nanmean median std_mean var_mean aminmax all any
count_nonzero""".split()
# Norms take the order before the dims: ``x.norm(p, dim, keepdim)``, ``linalg.vector_norm(x, ord, dim, keepdim)``.
_NORMS = [*resolve("norm"), torch.linalg.vector_norm, torch.linalg.norm, torch.linalg.matrix_norm]


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


def roi_pooling(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """torchvision's ``roi_align`` / ``roi_pool``: (N, C, H, W) features and boxes -> (K, C, h, w),
    each channel pooled on its own, so channels pass through; the boxes are coordinates (a width
    they carry is kept whole)."""
    x, boxes = args[0], args[1]
    for d in ctx.dims(boxes) if isinstance(boxes, torch.Tensor) else ():
        if isinstance(d, Tracked):
            ctx.store.freeze(d, f"read as box coordinates by roi pooling in {ctx.where}")
    channels = ctx.dims(x)[1]
    for t in out if isinstance(out, tuple) else (out,):
        if isinstance(t, torch.Tensor) and t.dim() == 4:
            ctx.set(t, [None, channels, None, None])


def register_torchvision_pooling() -> None:
    """Register :func:`roi_pooling` for torchvision's ops once torchvision is loaded (prunekit never
    imports it)."""
    import sys

    if "torchvision" not in sys.modules:
        return
    ops = getattr(torch.ops, "torchvision", None)
    for name in ("roi_align", "roi_pool"):
        packet = getattr(ops, name, None)
        if packet is not None and packet not in RULES:
            register_rule(packet, getattr(packet, "default", None))(roi_pooling)


def _spatial_rank(name: str, ndim: int) -> int:
    for rank in (1, 2, 3):
        if f"{rank}d" in name:
            return rank
    return max(ndim - 2, 1)  # interpolate / grid_sample: everything after (N, C)


def _reduced(args: tuple[Any, ...], kwargs: dict[str, Any], ndim: int, at: int = 1,
             default: Any = None) -> tuple[set[int], bool]:
    """The dims reduced and ``keepdim``, with ``dim`` at position ``at`` and ``keepdim`` after it."""
    given = args[at] if len(args) > at and not isinstance(args[at], torch.Tensor) else default
    dim = kwargs.get("dim", given)
    keepdim = bool(kwargs.get("keepdim", args[at + 1] if len(args) > at + 1 and isinstance(args[at + 1], bool)
                              else False))
    if dim is None:
        return set(range(ndim)), keepdim
    dims = [dim] if isinstance(dim, int) else list(dim)
    return {d % ndim for d in dims if isinstance(d, int)}, keepdim


def _set_reduced(ctx, out: Any, dims: list[Any], reduced: set[int], keepdim: bool) -> None:  # type: ignore[no-untyped-def]
    """Each tensor of ``out`` gets ``dims`` without the ``reduced`` ones (kept as size 1, carrying
    no channels, with ``keepdim``); a result of another rank carries none."""
    kept = [None if i in reduced else d for i, d in enumerate(dims)] if keepdim else \
        [d for i, d in enumerate(dims) if i not in reduced]
    for t in (out if isinstance(out, tuple) else (out,)):
        if isinstance(t, torch.Tensor):
            ctx.set(t, kept if t.dim() == len(kept) else [None] * t.dim())


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
    _set_reduced(ctx, out, dims, reduced, keepdim)


@register_rule(*_NORMS)
def norm(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """Norms over some dims: a p-norm with p >= 0 gives the pruned value when the removed channels
    hold zeros (they add nothing), so a norm over channels is inexact but checkable by value."""
    x = args[0]
    order = arg(args, kwargs, 1, "ord" if "linalg" in ctx.current else "p", None)
    default = (-2, -1) if ctx.current.endswith("matrix_norm") else None
    reduced, keepdim = _reduced(args, kwargs, x.dim(), at=2, default=default)
    dims = ctx.dims(x)
    for d in reduced:
        if isinstance(dims[d], Tracked):
            ctx.store.inexact(dims[d], f"norm over channels in {ctx.where}",
                              zero_safe=not (isinstance(order, (int, float)) and order < 0))
    _set_reduced(ctx, out, dims, reduced, keepdim)


@register_rule(*resolve("argmax", "argmin"))
def arg_extreme(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """The index of the largest value: over channels it is a channel number, which pruning renumbers,
    so those channels are frozen; other dims pass through."""
    x = args[0]
    dims = ctx.dims(x)
    reduced, keepdim = _reduced(args, kwargs, x.dim())
    for d in reduced:
        if isinstance(dims[d], Tracked):
            ctx.store.freeze(dims[d], f"a channel index taken by {ctx.where}")
    _set_reduced(ctx, out, dims, reduced, keepdim)


@register_rule(*resolve("cosine_similarity", "pairwise_distance"))
def similarity(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """Two same-shaped inputs compared along one dim (cosine: ``dim``=1; distance: the last): their
    channels are the same positions; over channels the result is inexact (cosine of zeroed channels
    adds nothing; a distance adds ``eps`` per channel, so it is not checked by value)."""
    a, b = args[0], arg(args, kwargs, 1, "x2", None)
    if not isinstance(b, torch.Tensor) or a.shape != b.shape:
        return ctx.opaque(args, kwargs, out, "inputs of different shapes")
    cosine = ctx.current.endswith("cosine_similarity")
    dim = arg(args, kwargs, 2, "dim", 1) % a.dim() if cosine else a.dim() - 1
    keepdim = False if cosine else bool(arg(args, kwargs, 4, "keepdim", False))
    dims = [ctx.store.unify(x, y, ctx.where) for x, y in zip(ctx.dims(a), ctx.dims(b))]
    if isinstance(dims[dim], Tracked):
        ctx.store.inexact(dims[dim], f"compared along channels by {ctx.where}", zero_safe=cosine)
    _set_reduced(ctx, out, dims, {dim}, keepdim)


@register_rule(*resolve("cdist"))
def cdist(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """``cdist(x1 [*, P, M], x2 [*, R, M])`` -> ``[*, P, R]``: every row of one against every row of
    the other over the last dim, whose channels are therefore the same positions in both (a VQ-VAE's
    codebook read as data is cut with the encoder's channels); a distance over zeroed channels is
    the pruned one (both zero there), so the cut is exact once they are zero."""
    a, b = args[0], arg(args, kwargs, 1, "x2", None)
    if not isinstance(b, torch.Tensor) or a.dim() != b.dim() or a.shape[-1] != b.shape[-1]:
        return ctx.opaque(args, kwargs, out, "cdist of inputs of other shapes")
    da, db = ctx.dims(a), ctx.dims(b)
    last = ctx.store.unify(read_as_data(ctx, da[-1], a.shape[-1]), read_as_data(ctx, db[-1], b.shape[-1]), ctx.where)
    if isinstance(last, Tracked):
        ctx.store.inexact(last, f"distances over channels in {ctx.where}", zero_safe=True)
    batch = [ctx.store.unify(x, y, ctx.where) for x, y in zip(da[:-2], db[:-2])]
    rows = [d if isinstance(d, Tracked) else None for d in (da[-2], db[-2])]
    ctx.set(out, batch + rows)


@register_rule(*resolve("softmax", "log_softmax", "softmin", "normalize", "cumsum", "cumprod",
                        "local_response_norm", "logcumsumexp", "gumbel_softmax"))
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
