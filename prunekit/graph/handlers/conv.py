"""Convolutions: a conv reads input channels through ``weight[:, j]`` and writes ``weight[i]``.

Depthwise convs (``groups == in_channels``) keep channel ``i`` in place, so input and output share
one group. Other grouped convs (1 < groups < in_channels) are frozen for now.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from prunekit.graph.constraints import ParamDim, Tracked
from prunekit.graph.registry import register_refresh, register_rule, resolve


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], pos: int, name: str, default: Any) -> Any:
    return kwargs.get(name, args[pos] if len(args) > pos else default)


@register_rule(*resolve("conv1d", "conv2d", "conv3d"))
def conv(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    _conv(ctx, args, kwargs, out, transposed=False)


@register_rule(*resolve("conv_transpose1d", "conv_transpose2d", "conv_transpose3d"))
def conv_transpose(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    _conv(ctx, args, kwargs, out, transposed=True)


def _conv(ctx, args, kwargs, out, *, transposed: bool) -> None:  # type: ignore[no-untyped-def]
    x, weight = args[0], _arg(args, kwargs, 1, "weight", None)
    bias = _arg(args, kwargs, 2, "bias", None)
    groups = _arg(args, kwargs, 6, "groups", 1)
    batched = x.dim() == weight.dim()
    c = 1 if batched else 0
    xd, wd = ctx.dims(x), ctx.dims(weight)
    result = [xd[0] if batched else None] + [None] * (out.dim() - 1) if batched else [None] * out.dim()
    in_axis, out_axis = (0, 1) if transposed else (1, 0)
    in_channels = x.shape[c]
    if groups == 1:
        layout = xd[c]
        if isinstance(layout, Tracked):
            if isinstance(wd[in_axis], ParamDim):
                ctx.store.use(layout, wd[in_axis].tensor, in_axis, "consumer")
            else:
                ctx.store.freeze(layout, f"conv weight is not a parameter in {ctx.where}")
        new = ctx.store.new_source(out.shape[c], _name(wd[out_axis], ctx.where))
        _produce(ctx, new, wd[out_axis], out_axis, bias)
        result[c] = new
    elif groups == in_channels and not transposed and weight.shape[1] == 1:
        multiplier = weight.shape[0] // groups
        layout = xd[c] if isinstance(xd[c], Tracked) else ctx.store.new_source(in_channels, _name(wd[0], ctx.where))
        if not isinstance(xd[c], Tracked):
            ctx.store.freeze(layout, f"depthwise conv on fixed input channels in {ctx.where}")
        scaled = layout.scaled(multiplier) if multiplier > 1 else layout
        if isinstance(wd[0], ParamDim):
            ctx.store.use(scaled, wd[0].tensor, 0, "producer")
            if bias is not None and isinstance(ctx.dims(bias)[0], ParamDim):
                ctx.store.use(scaled, ctx.dims(bias)[0].tensor, 0, "producer")
        else:
            ctx.store.freeze(layout, f"conv weight is not a parameter in {ctx.where}")
        result[c] = scaled
    else:
        if isinstance(xd[c], Tracked):
            ctx.store.freeze(xd[c], f"grouped conv (groups={groups}) in {ctx.where}")
        result[c] = ctx.store.new_source(out.shape[c], _name(wd[out_axis], ctx.where))
        ctx.store.freeze(result[c], f"grouped conv (groups={groups}) in {ctx.where}")
    ctx.set(out, result)


def _name(d: Any, where: str) -> str:
    return d.tensor if isinstance(d, ParamDim) else where


def _produce(ctx, layout: Tracked, weight_dim: Any, axis: int, bias: Any) -> None:  # type: ignore[no-untyped-def]
    """Register the producer rows (weight axis and bias) of a new channel source."""
    if isinstance(weight_dim, ParamDim):
        ctx.store.use(layout, weight_dim.tensor, axis, "producer")
    if bias is not None:
        bias_dim = ctx.dims(bias)[0]
        if isinstance(bias_dim, ParamDim):
            ctx.store.use(layout, bias_dim.tensor, 0, "producer")
        else:
            ctx.store.freeze(layout, f"bias is not a parameter in {ctx.where}")


@register_refresh(nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
def refresh_conv(module: nn.Module) -> None:
    """in_channels / out_channels / groups from the sliced weight."""
    w = module.weight
    old_in, old_out, old_groups = module.in_channels, module.out_channels, module.groups
    if module.transposed:
        module.in_channels, module.out_channels = w.shape[0], w.shape[1] * old_groups
        return
    if old_groups > 1 and old_groups == old_in:  # depthwise: groups follow the channels
        multiplier = old_out // old_groups
        module.out_channels = w.shape[0]
        module.groups = module.in_channels = w.shape[0] // multiplier
    else:
        module.out_channels, module.in_channels = w.shape[0], w.shape[1] * old_groups
