"""Ops that trade spatial positions for channels: ``pixel_shuffle`` and its inverse, im2col.

Each moves whole blocks: ``pixel_unshuffle(x, r)`` turns channel ``c`` into channels
``c*r*r .. c*r*r + r*r - 1``, so the result's channels are the input's, each ``r*r`` wide, and
``pixel_shuffle`` reads its input in such units. The spatial dims carry no channels.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from prunekit.graph.constraints import Tracked
from prunekit.graph.handlers.common import arg
from prunekit.graph.handlers.shape import heads_of
from prunekit.graph.registry import register_rule, resolve


def _pair(value: Any) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _spread(ctx, x: torch.Tensor, out: torch.Tensor, factor: int, spatial: int) -> None:  # type: ignore[no-untyped-def]
    """Channels (dim ``-spatial-1`` of ``x``) each become ``factor`` consecutive channels of ``out``."""
    dims = ctx.dims(x)
    at = x.dim() - spatial - 1
    layout = dims[at]
    merged = layout.scaled(factor) if isinstance(layout, Tracked) else None
    ctx.set(out, dims[:at] + [merged] + [None] * (out.dim() - at - 1))


def _gather(ctx, x: torch.Tensor, out: torch.Tensor, factor: int, spatial: int) -> None:  # type: ignore[no-untyped-def]
    """Units of ``factor`` consecutive channels of ``x`` (dim ``-spatial-1``) become one channel of ``out``."""
    dims = ctx.dims(x)
    at = x.dim() - spatial - 1
    layout = dims[at]
    units = heads_of(ctx, layout, factor) if isinstance(layout, Tracked) else None
    if isinstance(layout, Tracked) and units is None:
        ctx.store.freeze(layout, f"channel blocks of {factor} do not line up with the channels in {ctx.where}")
    ctx.set(out, dims[:at] + [units] + [None] * (out.dim() - at - 1))


@register_rule(*resolve("pixel_unshuffle"))
def pixel_unshuffle(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """(*, C, H*r, W*r) -> (*, C*r*r, H, W)."""
    r = int(arg(args, kwargs, 1, "downscale_factor", 1))
    _spread(ctx, args[0], out, r * r, 2)


@register_rule(*resolve("pixel_shuffle"))
def pixel_shuffle(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """(*, C*r*r, H, W) -> (*, C, H*r, W*r)."""
    r = int(arg(args, kwargs, 1, "upscale_factor", 1))
    _gather(ctx, args[0], out, r * r, 2)


@register_rule(torch.nn.functional.unfold)
def im2col(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """``F.unfold``: (N, C, H, W) -> (N, C*kh*kw, L), channel-major. (``Tensor.unfold`` is another
    op, sliding windows, registered in ``shape``.)"""
    x = args[0]
    if x.dim() not in (3, 4) or out.dim() != x.dim() - 1:
        return ctx.opaque(args, kwargs, out, "unfold of other than a (N, C, H, W) input")
    _spread(ctx, x, out, math.prod(_pair(arg(args, kwargs, 1, "kernel_size", 1))), 2)  # NOTE: L carries none


@register_rule(torch.nn.functional.fold)
def col2im(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """``F.fold``: (N, C*kh*kw, L) -> (N, C, H, W), overlapping blocks summed per channel."""
    x = args[0]
    if x.dim() not in (2, 3) or out.dim() != x.dim() + 1:
        return ctx.opaque(args, kwargs, out, "fold of other than a (N, C*k*k, L) input")
    _gather(ctx, x, out, math.prod(_pair(arg(args, kwargs, 2, "kernel_size", 1))), 1)
