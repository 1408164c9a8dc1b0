"""Linear layers and embeddings: the last dim is read through ``weight[:, j]`` and written by ``weight[i]``."""

from __future__ import annotations

import torch
from torch import nn

from prunekit.graph.constraints import ParamDim, Tracked
from prunekit.graph.handlers.common import arg, computed_weight, produce, read_as_data, source_name
from prunekit.graph.registry import register_refresh, register_rule, register_width_attributes, resolve


@register_rule(*resolve("linear"))
def linear(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    x, weight = args[0], arg(args, kwargs, 1, "weight", None)
    bias = arg(args, kwargs, 2, "bias", None)
    xd, wd = ctx.dims(x), ctx.dims(weight)
    if weight.dim() != 2:
        return ctx.opaque(args, kwargs, out, "linear weight is not 2-d")
    layout = read_as_data(ctx, xd[-1], weight.shape[1])  # NOTE: query.weight.unsqueeze(1).repeat(...)
    if (computed := computed_weight(ctx, layout, wd[1], wd[0], bias)) is not None:
        return ctx.set(out, xd[:-1] + [computed])  # NOTE: MADE's self.mask * self.weight
    if isinstance(layout, Tracked):
        if isinstance(wd[1], ParamDim):  # NOTE: its own axis: an expert's weight[i] of a 3-d parameter
            ctx.store.use(layout, wd[1].tensor, wd[1].axis, "consumer", offset=wd[1].start)
        else:
            ctx.store.freeze(layout, f"linear weight is not a parameter in {ctx.where}")
    elif isinstance(wd[1], ParamDim) and wd[1].size > 1:
        # NOTE: the weight also reads data of a fixed width (Zaya's v_proj_delayed(zeros(B, 1,
        # self.hidden_size))): its columns must not be cut by another call that reads channels
        ctx.store.fixed_read(wd[1].tensor, wd[1].axis, f"the weight also reads data of a fixed width in {ctx.where}")
    new = ctx.store.new_source(out.shape[-1], source_name(wd[0], ctx.where))
    produce(ctx, new, wd[0], wd[0].axis if isinstance(wd[0], ParamDim) else 0, bias)
    ctx.set(out, xd[:-1] + [new])


@register_rule(*resolve("_grouped_mm", "grouped_mm"))
def grouped_mm(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """``grouped_mm(x [S, K], w [E, K, N], offs)``: each row of ``x`` is multiplied by one expert's
    ``w[e]`` (Mixtral-style experts): ``K`` is read through ``w``'s axis 1, ``N`` written by its
    axis 2, for every expert alike (the expert axis is not cut)."""
    x, weight = args[0], args[1] if len(args) > 1 else kwargs.get("mat2", kwargs.get("mat_b"))
    if not isinstance(weight, torch.Tensor) or x.dim() != 2 or weight.dim() != 3 or out.dim() != 2:
        return ctx.opaque(args, kwargs, out, "grouped_mm other than [S, K] x [E, K, N]")
    xd, wd = ctx.dims(x), ctx.dims(weight)
    layout = xd[-1]
    if isinstance(layout, Tracked):
        if isinstance(wd[1], ParamDim):
            ctx.store.use(layout, wd[1].tensor, wd[1].axis, "consumer", offset=wd[1].start)
        else:
            ctx.store.freeze(layout, f"grouped_mm weight is not a parameter in {ctx.where}")
    new = ctx.store.new_source(out.shape[-1], source_name(wd[2], ctx.where))
    produce(ctx, new, wd[2], wd[2].axis if isinstance(wd[2], ParamDim) else 0, None)
    ctx.set(out, [xd[0], new])


@register_rule(*resolve("bilinear"))
def bilinear(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """``bilinear(x1 [*, I1], x2 [*, I2], W [O, I1, I2], b [O])``: ``y[o] = x1 W[o] x2 + b[o]``; each
    input's last dim is read through its own axis of ``W`` (1 and 2), the output written by axis 0
    and the bias, as a Linear's are. The leading dims of the two inputs are the same positions."""
    x1, x2 = args[0], arg(args, kwargs, 1, "input2", None)
    weight, bias = arg(args, kwargs, 2, "weight", None), arg(args, kwargs, 3, "bias", None)
    if not isinstance(x2, torch.Tensor) or not isinstance(weight, torch.Tensor) or weight.dim() != 3:
        return ctx.opaque(args, kwargs, out, "bilinear weight is not 3-d")
    d1, d2, wd = ctx.dims(x1), ctx.dims(x2), ctx.dims(weight)
    for x, dims, axis in ((x1, d1, 1), (x2, d2, 2)):
        layout = read_as_data(ctx, dims[-1], x.shape[-1])
        if not isinstance(layout, Tracked):
            continue
        if isinstance(wd[axis], ParamDim):
            ctx.store.use(layout, wd[axis].tensor, wd[axis].axis, "consumer", offset=wd[axis].start)
        else:
            ctx.store.freeze(layout, f"bilinear weight is not a parameter in {ctx.where}")
    lead = [ctx.store.unify(a, b, ctx.where) for a, b in zip(d1[:-1], d2[:-1])]
    new = ctx.store.new_source(out.shape[-1], source_name(wd[0], ctx.where))
    produce(ctx, new, wd[0], wd[0].axis if isinstance(wd[0], ParamDim) else 0, bias)
    ctx.set(out, lead + [new])


@register_rule(*resolve("embedding"))
def embedding(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """Looked-up rows carry the embedding's columns as new channels. The rows are read by position,
    so where they are channels elsewhere (Ovis2's visual vocabulary, a softmax over it multiplied
    with the same table), those stay whole: a cut would shift the rows the indices name."""
    indices, weight = args[0], arg(args, kwargs, 1, "weight", None)
    wd = ctx.dims(weight)
    if isinstance(wd[0], ParamDim):
        ctx.store.fixed_read(wd[0].tensor, 0, f"rows looked up by index in {ctx.where}: a cut would shift them")
    new = ctx.store.new_source(out.shape[-1], source_name(wd[1], ctx.where))
    if isinstance(wd[1], ParamDim):
        ctx.store.use(new, wd[1].tensor, 1, "producer")
    ctx.set(out, [None] * indices.dim() + [new])


@register_rule(*resolve("embedding_bag"))
def embedding_bag(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """Each bag's rows are summed (or averaged, or maxed) column by column: the result's last dim
    carries the table's columns as new channels, as ``embedding``'s does."""
    weight = arg(args, kwargs, 1, "weight", None)
    result = out[0] if isinstance(out, tuple) else out
    wd = ctx.dims(weight)
    new = ctx.store.new_source(result.shape[-1], source_name(wd[1], ctx.where))
    if isinstance(wd[1], ParamDim):
        ctx.store.use(new, wd[1].tensor, 1, "producer")
    ctx.set(result, [None] * (result.dim() - 1) + [new])
    for extra in out[1:] if isinstance(out, tuple) else ():
        if isinstance(extra, torch.Tensor):
            ctx.set(extra, [None] * extra.dim())


@register_refresh(nn.Linear)
def refresh_linear(module: nn.Module) -> None:
    module.out_features, module.in_features = module.weight.shape


register_width_attributes(nn.Linear, in_features=1, out_features=0)


@register_refresh(nn.Bilinear)
def refresh_bilinear(module: nn.Module) -> None:
    module.out_features, module.in1_features, module.in2_features = module.weight.shape


register_width_attributes(nn.Bilinear, out_features=0, in1_features=1, in2_features=2)
register_width_attributes(nn.Embedding, embedding_dim=1)


@register_refresh(nn.Embedding, nn.EmbeddingBag)
def refresh_embedding(module: nn.Module) -> None:
    module.embedding_dim = module.weight.shape[1]
