"""Helpers shared by the handlers: reading call arguments, slicing layouts, registering producers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch import nn

from prunekit.graph.constraints import FIXED, ParamDim, Segment, Tracked

__all__ = ["arg", "slice_layout", "equal_blocks", "add_bias", "source_name", "produce", "read_as_data",
           "parametrizations"]


def arg(args: tuple[Any, ...], kwargs: dict[str, Any], pos: int, name: str, default: Any) -> Any:
    """A call argument given by keyword ``name`` or at position ``pos`` (else ``default``)."""
    return kwargs.get(name, args[pos] if len(args) > pos else default)


def read_as_data(ctx, d: Any, size: int) -> Any:  # type: ignore[no-untyped-def]
    """``d`` as channels where it is the axis of a parameter read as data (DETR's learned queries, a
    Perceiver's latents, DeBERTa-v2's normalised position table) and holds ``size`` positions: a
    source the parameter uses, cut with whatever reads it wherever it meets channels
    (``ConstraintStore.param_source``). Anything else: ``d`` as it is."""
    return ctx.store.param_source(d) if isinstance(d, ParamDim) and d.size == size else d


def slice_layout(layout: Tracked, start: int, length: int) -> Tracked | None:
    """Positions ``start .. start+length`` of ``layout`` (None if that splits a channel)."""
    segments, position = [], 0
    for s in layout.segments:
        lo, hi = max(start, position), min(start + length, position + s.extent)
        if lo < hi:
            if s.source != FIXED and ((lo - position) % s.inner or (hi - position) % s.inner):
                return None
            inner = s.inner if s.source != FIXED else 1
            segments.append(Segment(s.source, s.start + (lo - position) // inner, (hi - lo) // inner, s.inner))
        position += s.extent
    return Tracked(tuple(segments))


def equal_blocks(ctx, layout: Tracked, groups: int) -> list[Tracked] | None:  # type: ignore[no-untyped-def]
    """``layout`` cut into ``groups`` equal blocks, each equated with block 0 (None: frozen)."""
    if groups == 1:
        return [layout]
    width = layout.size // groups
    blocks = [slice_layout(layout, i * width, width) for i in range(groups)]
    if any(b is None for b in blocks):
        ctx.store.freeze(layout, f"conv groups (groups={groups}) cut through a channel in {ctx.where}")
        return None
    for block in blocks[1:]:
        ctx.store.unify(blocks[0], block, ctx.where)
    return blocks  # type: ignore[return-value]


def computed_weight(ctx, layout: Any, read: Any, written: Any, bias: Any) -> Tracked | None:  # type: ignore[no-untyped-def]
    """A conv or linear layer whose weight is computed entrywise from parameters and buffers of its
    shape (PixelCNN's ``self.weight * self.mask``, MADE's ``self.mask * self.weight``): the weight's
    axes that read (``read``) and write (``written``) channels are parameter sources (see
    ``ConstraintStore.weight_axes``), each naming every tensor behind it. The input ``layout`` is the
    read axis's channels, the output the written axis's, and the tensors behind them are sliced as a
    weight (and its mask) would be. Returns the output's channels; None: not that case."""
    if ctx.store.weight_axes(read) is None or ctx.store.weight_axes(written) is None:
        return None
    if isinstance(layout, Tracked):
        ctx.store.unify(layout, read, ctx.where)
        ctx.store.weight_role(read, "consumer")
    ctx.store.weight_role(written, "producer")
    add_bias(ctx, written, bias)
    return written  # type: ignore[no-any-return]


def add_bias(ctx, layout: Tracked, bias: Any) -> None:  # type: ignore[no-untyped-def]
    """The bias (if any) holds one entry per output channel."""
    if bias is None:
        return
    bias_dim = ctx.dims(bias)[0]
    if isinstance(bias_dim, ParamDim):
        ctx.store.use(layout, bias_dim.tensor, 0, "producer")
    elif isinstance(bias_dim, Tracked) and bias.dim() == 1:  # assembled from parameters (shape.cat)
        ctx.store.unify(layout, bias_dim, ctx.where)
    else:
        ctx.store.freeze(layout, f"bias is not a parameter in {ctx.where}")


def source_name(d: Any, where: str) -> str:
    """A new source's name: the producing parameter, else the call site."""
    return d.tensor if isinstance(d, ParamDim) else where


def produce(ctx, layout: Tracked, weight_dim: Any, axis: int, bias: Any) -> None:  # type: ignore[no-untyped-def]
    """Register the producer rows (weight axis and bias) of a new channel source."""
    if isinstance(weight_dim, ParamDim):
        ctx.store.use(layout, weight_dim.tensor, axis, "producer", offset=weight_dim.start)
    add_bias(ctx, layout, bias)


def parametrizations(model: nn.Module) -> Iterator[tuple[str, nn.ModuleList]]:
    """Every parametrized tensor of ``model`` (``torch.nn.utils.parametrize``): the name its
    parametrizations live under (``conv.parametrizations.weight``) and their chain, a
    ``ParametrizationList`` holding the ``original`` tensor(s)."""
    for name, module in model.named_modules():
        for attr, chain in getattr(module, "parametrizations", {}).items():
            yield f"{name}.parametrizations.{attr}" if name else f"parametrizations.{attr}", chain
