"""Convolutions: a conv reads input channels through ``weight[:, j]`` and writes ``weight[i]``.

A conv with ``g`` groups reads its input in ``g`` equal blocks and writes its output in ``g`` equal
blocks; block ``i`` of the output sees only block ``i`` of the input. Pruning keeps ``groups == g``
and narrows every block alike: the blocks of a dim are equated (block ``i`` channel ``j`` ==
block 0 channel ``j``, as a ``chunk`` does), so one group channel ``j`` stands for ``g`` channels
(one per block) and removes one weight column (which all blocks share) plus ``g`` weight rows.
NOTE: keeping ``g`` and shrinking the group width is what ResNeXt/RegNet stages are built from
(a constant group width per stage) and it removes MACs in every group, so it is as fast as
removing whole groups would be, with no change to the module's ``groups`` attribute.

Depthwise convs (one input channel per group, ``groups == in_channels``) are the exception: each
channel is its own block, so input channel ``c`` and its ``multiplier`` output rows
``c*m .. c*m+m-1`` form one group and ``groups`` follows the pruned width.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from torch import nn

from prunekit.graph.constraints import Dim, ParamDim, Segment, Tracked
from prunekit.graph.handlers.call_source import read_first
from prunekit.graph.handlers.common import add_bias, arg, computed_weight, equal_blocks
from prunekit.graph.handlers.shape import heads_of, size_attribute
from prunekit.graph.registry import (RULES, refresh_for, register_refresh, register_rule, register_width_attributes,
                                     resolve)


@register_rule(*resolve("conv1d", "conv2d", "conv3d"))
def conv(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    _conv(ctx, args, kwargs, out, transposed=False)


@register_rule(*resolve("conv_transpose1d", "conv_transpose2d", "conv_transpose3d"))
def conv_transpose(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    _conv(ctx, args, kwargs, out, transposed=True)


def _conv(ctx, args, kwargs, out, *, transposed: bool) -> None:  # type: ignore[no-untyped-def]
    x, weight = args[0], arg(args, kwargs, 1, "weight", None)
    bias = arg(args, kwargs, 2, "bias", None)
    groups = arg(args, kwargs, 6, "groups", 1)  # 6th after input for conv and conv_transpose alike
    batched = x.dim() == weight.dim()
    c = 1 if batched else 0
    xd, wd = ctx.dims(x), ctx.dims(weight)
    result: list[Dim] = [xd[0] if batched else None] + [None] * (out.dim() - 1) if batched else [None] * out.dim()
    in_axis, out_axis = (0, 1) if transposed else (1, 0)
    in_channels = x.shape[c]
    depthwise = groups > 1 and groups == in_channels
    # NOTE: a depthwise weight viewed back to [C, 1, k] (LFM's ``weight.squeeze(1)`` .. ``unsqueeze(1)``)
    # has a new size-1 axis: only its rows are cut
    per_group = isinstance(wd[1], ParamDim) or (depthwise and weight.shape[1] == 1)
    if groups == 1 and (computed := computed_weight(ctx, xd[c], wd[in_axis], wd[out_axis], bias)) is not None:
        result[c] = computed
        return ctx.set(out, result)
    if not isinstance(wd[0], ParamDim) or not per_group:  # NOTE: e.g. a standardised weight
        if isinstance(xd[c], Tracked):
            ctx.store.freeze(xd[c], f"conv weight is not a parameter in {ctx.where}")
        result[c] = None
    elif depthwise:
        result[c] = _depthwise(ctx, xd[c], wd, bias, in_channels, out.shape[c] // groups, transposed)
        _stored_groups(ctx, groups, result[c] if transposed else xd[c])
    elif (groups > 1 and not transposed and any(follows(ctx) for follows in GROUPS_FOLLOW)
          and (whole := _whole_groups(ctx, xd[c], wd, bias, groups, out.shape[c])) is not None):
        result[c] = whole
    else:
        result[c] = _grouped(ctx, xd[c], wd, bias, groups, out.shape[c], in_axis, out_axis)
    ctx.set(out, result)


def _stored_groups(ctx, groups: int, layout: Dim) -> None:  # type: ignore[no-untyped-def]
    """A depthwise conv called with ``groups`` from a module attribute (timm's BlurPool2d passes
    ``groups=self.channels``): the attribute must follow the pruned width. With exactly one
    attribute of the running module holding it, it joins the group (``apply`` rewrites it); else the
    channels are frozen. ``nn.Conv*`` (own refresh) and widths read from a shape follow already."""
    from prunekit.graph.trace import ChannelInt

    module = ctx.module
    if not isinstance(layout, Tracked) or type(groups) is not int or isinstance(groups, ChannelInt):
        return
    if module is None or refresh_for(module) is not None:
        return
    # NOTE: of several holding it, the one the call reads (``groups=self.channels``)
    found = read_first(module, [key for key, value in vars(module).items() if type(value) is int and value == groups])
    scope = ctx.scope[-1]
    if len(found) == 1:
        ctx.store.use(layout, size_attribute(scope, found[0], None), 0, "passive")
        return
    owner = f"'{scope}'" if scope else "the root module"
    held = (f"held by several attributes of {owner} ({', '.join(found)})" if found
            else f"which no attribute of {owner} holds")
    ctx.store.freeze(layout, f"depthwise conv with the constant groups={groups}, {held}, in {ctx.where}; "
                             f"it would not follow pruning")


def _grouped(ctx, layout: Dim, wd: list[Dim], bias: Any, groups: int, out_channels: int,  # type: ignore[no-untyped-def]
             in_axis: int, out_axis: int) -> Tracked:
    """Dense (``groups == 1``) or grouped conv: equal blocks in, equal blocks out, ``groups`` kept."""
    # Of the two weight axes, the one of size C/g (shared by all blocks) holds block 0's channels;
    # the one of size C holds every channel (block i at offset i*C/g).
    per_block_in = in_axis == 1  # conv: weight[out, in/g]; conv_transpose: weight[in, out/g]
    if isinstance(layout, Tracked):
        blocks = equal_blocks(ctx, layout, groups)
        if blocks is not None:
            ctx.store.use(blocks[0] if per_block_in else layout, wd[in_axis].tensor, in_axis, "consumer")
    new = ctx.store.new_source(out_channels, wd[out_axis].tensor)
    out_blocks = equal_blocks(ctx, new, groups) or [new]  # a fresh source always divides evenly
    ctx.store.use(new if per_block_in else out_blocks[0], wd[out_axis].tensor, out_axis, "producer")
    add_bias(ctx, new, bias)
    return new


# Callables ``(ctx) -> bool``: True when a module running now (a parent of the conv) keeps the
# ``groups`` of its grouped convs equal to a count the cut changes (EfficientViT's LiteMLA: three
# groups per head), so those convs lose whole groups instead of narrowing every group.
GROUPS_FOLLOW: list[Callable[[Any], bool]] = []


def _whole_groups(ctx, layout: Dim, wd: list[Dim], bias: Any, groups: int,  # type: ignore[no-untyped-def]
                  out_channels: int) -> Tracked | None:
    """Grouped conv cut by whole groups: group ``k`` reads input channels ``k*i ..`` and writes rows
    ``k*o ..``, so the input in units of ``i`` channels is the output in units of ``o`` rows (the
    weight's per-group input axis is not cut). None (the usual rule applies) if a group would straddle."""
    if not isinstance(layout, Tracked):
        return None
    units = heads_of(ctx, layout, layout.size // groups)
    if units is None:
        return None
    rows = Tracked(tuple(Segment(s.source, s.start, s.length, s.inner * (out_channels // groups))
                         for s in units.segments))
    ctx.store.use(rows, wd[0].tensor, 0, "producer")
    add_bias(ctx, rows, bias)
    return rows


def _depthwise(ctx, layout: Dim, wd: list[Dim], bias: Any, channels: int, multiplier: int,  # type: ignore[no-untyped-def]
               transposed: bool) -> Tracked:
    """Depthwise conv: input channel ``c`` and output rows ``c*m .. c*m+m-1`` are one channel."""
    if not isinstance(layout, Tracked):
        layout = ctx.store.new_source(channels, wd[0].tensor)
        ctx.store.freeze(layout, f"depthwise conv on fixed input channels in {ctx.where}")
    scaled = layout.scaled(multiplier) if multiplier > 1 else layout
    # conv: weight[C*m, 1] (rows c*m+k); conv_transpose: weight[C, m] (row c, column k)
    ctx.store.use(layout if transposed else scaled, wd[0].tensor, 0, "producer")
    add_bias(ctx, scaled, bias)
    return scaled


# NOTE: a transposed conv's weight is [in, out/g]: its out_channels is no axis of it
register_width_attributes(nn.Conv1d, nn.Conv2d, nn.Conv3d, out_channels=0)


@register_refresh(nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
def refresh_conv(module: nn.Module) -> None:
    """in_channels / out_channels / groups from the sliced weight (groups change only if depthwise)."""
    w = module.weight
    old_in, old_out, old_groups = module.in_channels, module.out_channels, module.groups
    depthwise = old_groups > 1 and old_groups == old_in
    if module.transposed:  # weight[in, out/g]
        module.in_channels = w.shape[0]
        module.groups = w.shape[0] if depthwise else old_groups
        module.out_channels = w.shape[1] * module.groups
        return
    if depthwise:  # weight[C*m, 1]
        multiplier = old_out // old_groups
        module.out_channels = w.shape[0]
        module.groups = module.in_channels = w.shape[0] // multiplier
    else:  # weight[out, in/g]
        module.out_channels, module.in_channels = w.shape[0], w.shape[1] * old_groups


def deform_conv(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """torchvision's deformable conv (``torchvision.ops.deform_conv2d``, DCNv1/v2): channels flow as
    in a grouped conv (``n_weight_grps`` groups); the offsets (two per kernel position and offset
    group) and the modulation mask are coordinates, not channels, so what produces them keeps its
    width. A bias torchvision makes itself (zeros of the weight's rows) follows the cut."""
    x, weight, offset, mask, bias = args[:5]
    groups = int(args[11]) if len(args) > 11 else 1
    xd, wd = ctx.dims(x), ctx.dims(weight)
    for t, what in ((offset, "offsets"), (mask, "modulation mask")):
        d = ctx.dims(t)[1] if t.dim() > 1 else None
        if isinstance(d, Tracked):
            ctx.store.freeze(d, f"{what} of a deformable conv (coordinates per kernel position) in {ctx.where}")
    result: list[Dim] = [xd[0]] + [None] * (out.dim() - 1)
    if not isinstance(wd[0], ParamDim) or not isinstance(wd[1], ParamDim):
        if isinstance(xd[1], Tracked):
            ctx.store.freeze(xd[1], f"deformable conv weight is not a parameter in {ctx.where}")
    else:
        given = bias if isinstance(ctx.dims(bias)[0], (ParamDim, Tracked)) else None
        result[1] = _grouped(ctx, xd[1], wd, given, groups, out.shape[1], 1, 0)
    ctx.set(out, result)


def register_deform_conv() -> None:
    """Register ``deform_conv`` for torchvision's op once torchvision's ops are loaded (prunekit
    never imports torchvision)."""
    if "torchvision.ops.deform_conv" not in sys.modules:
        return
    import torch

    packet = getattr(getattr(torch.ops, "torchvision", None), "deform_conv2d", None)
    if packet is not None and packet not in RULES:
        register_rule(packet, getattr(packet, "default", None))(deform_conv)
