"""Normalisations and PReLU: per-channel parameters follow the channels they scale.

BatchNorm and InstanceNorm act on each channel alone (exact). LayerNorm/RMSNorm over a channel dim
mix channels (inexact: pruning changes the statistics). GroupNorm normalises ``num_groups`` equal
blocks of channels: every block loses the same channels (block ``i`` channel ``j`` == block 0
channel ``j``, as for grouped convs), so ``num_groups`` still divides the width. That changes each
block's statistics (inexact), except when every block is one channel (``num_groups == C``, exact;
``num_groups`` then follows the width).
"""

from __future__ import annotations

import torch
from torch import nn

from prunekit.graph.constraints import ParamDim, Tracked
from prunekit.graph.handlers.common import arg, equal_blocks, read_as_data
from prunekit.graph.handlers.shape import join_size, size_attribute
from prunekit.graph.registry import register_refresh, register_rule, resolve


def _scale(ctx, layout, tensor) -> object:  # type: ignore[no-untyped-def]
    """Unify a channel layout with dim 0 of a per-channel parameter (if given)."""
    if tensor is None:
        return layout
    return ctx.store.unify(layout, ctx.dims(tensor)[0], ctx.where)


@register_rule(*resolve("batch_norm", "instance_norm"))
def batch_norm(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """F.batch_norm(x, running_mean, running_var, weight, bias, ...); same order for instance_norm."""
    x = args[0]
    dims = ctx.dims(x)
    if ctx.current == "torch.batch_norm":  # torch.batch_norm(x, weight, bias, mean, var, ...)
        tensors = [a for a in args[1:5] if isinstance(a, torch.Tensor)]
    else:
        names = ("running_mean", "running_var", "weight", "bias")
        tensors = [arg(args, kwargs, i + 1, n, None) for i, n in enumerate(names)]
    c = 1 if x.dim() > 1 else 0
    layout = dims[c]
    for t in tensors:
        if t is not None:
            layout = _scale(ctx, layout, t)
    if all(t is None for t in tensors):  # NOTE: no tensor is sliced, so no refresh runs: the graph rewrites it
        _stored_width(ctx, "num_features", x.shape[c], layout)
    dims[c] = layout
    ctx.set(out, dims)


def _stored_width(ctx, attr: str, width: int, layout: object) -> bool:  # type: ignore[no-untyped-def]
    """Join the running module's int ``attr`` (when it holds ``width``) to ``layout``, so ``apply``
    rewrites it: a norm without affine weight or statistics (``nn.InstanceNorm2d(C)``,
    ``nn.GroupNorm(G, C, affine=False)``) has no tensor from which a refresh could read it back.
    False: no such attribute (or its channels were frozen)."""
    module = ctx.module
    if not isinstance(layout, Tracked) or module is None or type(vars(module).get(attr)) is not int \
            or vars(module)[attr] != width:
        return False
    return join_size(ctx, module, width, size_attribute(ctx.scope[-1], attr, None), layout)


@register_rule(*resolve("layer_norm", "rms_norm"))
def layer_norm(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    from prunekit.graph.trace import ChannelInt

    x, shape = args[0], arg(args, kwargs, 1, "normalized_shape", ())
    weight = arg(args, kwargs, 2, "weight", None)
    bias = arg(args, kwargs, 3, "bias", None) if ctx.current.endswith("layer_norm") else None
    dims = ctx.dims(x)
    n = len(shape) if not isinstance(shape, int) else 1
    for k in range(1, n + 1):
        layout = dims[-k]
        if weight is not None and isinstance(ctx.dims(weight)[-k], ParamDim):
            layout = read_as_data(ctx, layout, x.shape[-k])  # NOTE: DeBERTa-v2's relative position table
        if not isinstance(layout, Tracked):
            continue
        if weight is None or not isinstance(ctx.dims(weight)[-k], ParamDim):
            attr, whole = _stored_shape(ctx, shape)
            entry = shape if isinstance(shape, int) else shape[n - k]
            if isinstance(entry, ChannelInt):  # NOTE: read from a shape at run time (Ergo's
                ctx.store.unify(layout, entry.layout, ctx.where)  # ``(x.shape[-1],)``): it follows the cut
                ctx.store.inexact(layout, f"LayerNorm statistics over channels in {ctx.where}")
            elif attr is None:
                ctx.store.freeze(layout, f"normalized_shape is a constant without affine weight in {ctx.where}")
            else:  # NOTE: apply shrinks the attribute the forward reads (OLMo's self.normalized_shape)
                ctx.store.use(layout, size_attribute(ctx.scope[-1], attr, None if whole else n - k), 0, "passive")
                ctx.store.inexact(layout, f"LayerNorm statistics over channels in {ctx.where}")
            continue
        ctx.store.inexact(layout, f"LayerNorm statistics over channels in {ctx.where}")
        for t in (weight, bias):
            if t is not None:
                layout = ctx.store.unify(layout, ctx.dims(t)[-k], ctx.where)
        dims[-k] = layout
    ctx.set(out, dims)


def _stored_shape(ctx, shape: object) -> tuple[str | None, bool]:  # type: ignore[no-untyped-def]
    """The one attribute of the running module that holds ``normalized_shape`` (a norm without an
    affine weight: ``nn.LayerNorm(C, elementwise_affine=False)``, OLMo's LayerNorm), if any, and
    whether it is an int (the whole shape, or its one entry: WavTokenizer's ``(self.dim,)``)."""
    if ctx.module is None:
        return None, False
    single = shape[0] if isinstance(shape, (tuple, list, torch.Size)) and len(shape) == 1 else None
    found = [(name, type(value) is int) for name, value in vars(ctx.module).items()
             if (type(value) in (int, tuple, list, torch.Size) and value == shape)
             or (type(value) is int and single is not None and value == single)]
    return found[0] if len(found) == 1 else (None, False)


@register_rule(*resolve("group_norm"))
def group_norm(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """F.group_norm(x, num_groups, weight, bias, eps); torch.group_norm has the same order."""
    x, num_groups = args[0], arg(args, kwargs, 1, "num_groups", 1)
    dims = ctx.dims(x)
    layout = dims[1] if x.dim() > 1 else None
    if isinstance(layout, Tracked):
        weight, bias = arg(args, kwargs, 2, "weight", None), arg(args, kwargs, 3, "bias", None)
        if num_groups == x.shape[1] and num_groups > 1:  # one channel per block: a per-channel norm
            if weight is None and not _stored_width(ctx, "num_groups", num_groups, layout):
                # NOTE: num_groups could not follow the width without a weight or attribute holding it
                ctx.store.freeze(layout, f"GroupNorm with one channel per group and no weight in {ctx.where}")
        else:
            equal_blocks(ctx, layout, num_groups)
            ctx.store.inexact(layout, f"GroupNorm statistics over channels in {ctx.where}")
        if weight is None:
            _stored_width(ctx, "num_channels", x.shape[1], layout)
        for t in (weight, bias):
            if t is not None:
                layout = _scale(ctx, layout, t)
        dims[1] = layout
    ctx.set(out, dims)


@register_rule(*resolve("prelu"))
def prelu(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    x, weight = args[0], arg(args, kwargs, 1, "weight", None)
    dims = ctx.dims(x)
    if weight is not None and weight.numel() > 1:
        c = 1 if x.dim() > 1 else 0
        dims[c] = _scale(ctx, dims[c], weight)
    ctx.set(out, dims)


@register_refresh(nn.modules.batchnorm._NormBase)
def refresh_norm(module: nn.Module) -> None:
    source = module.weight if module.weight is not None else module.running_mean
    if source is not None:
        module.num_features = source.shape[0]


@register_refresh(nn.GroupNorm)
def refresh_group_norm(module: nn.Module) -> None:
    """num_channels from the affine weight; per-channel GroupNorm (num_groups == C) keeps that."""
    if module.weight is None:
        return
    if module.num_groups == module.num_channels:
        module.num_groups = module.weight.shape[0]
    module.num_channels = module.weight.shape[0]


@register_refresh(nn.LayerNorm, nn.RMSNorm)
def refresh_layer_norm(module: nn.Module) -> None:
    """``normalized_shape`` from the affine weight (LayerNorm, RMSNorm and the library norms that
    hold the same two attributes: timm's RmsNorm, SimpleNorm)."""
    if module.weight is not None:
        module.normalized_shape = tuple(module.weight.shape)


@register_refresh(nn.PReLU)
def refresh_prelu(module: nn.Module) -> None:
    module.num_parameters = module.weight.numel()
