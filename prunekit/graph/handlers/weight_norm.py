"""Weight normalisation (``torch.nn.utils.parametrizations.weight_norm`` and the older hook):
``weight = g * v / ||v||``, computed in the forward from two parameters.

The computed weight's axes are ``v``'s, so a conv or linear rule reads it as it reads a parameter.
Its norm axis ``dim`` (a conv's rows, a transposed conv's input channels) is ``g``'s too: both are
cut together, exactly (each row's norm is its own). The norm sums over every other axis, so cutting
one of them rescales all the kept rows: those cuts are inexact (verification checks their values).
:func:`scales` tells verification which ``g`` zeroes a ``v`` row (a zero ``v`` row is 0/0).
"""

from __future__ import annotations

import torch
from torch import nn

from prunekit.graph.constraints import ParamDim
from prunekit.graph.groups import owner
from prunekit.graph.handlers.common import arg, parametrizations
from prunekit.graph.registry import register_rule, resolve


@register_rule(*resolve("_weight_norm"))
def weight_norm(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """``_weight_norm(v, g, dim)``: the output has ``v``'s axes; ``g`` follows ``v`` along ``dim``."""
    v, g = args[0], arg(args, kwargs, 1, "g", None)
    dim = arg(args, kwargs, 2, "dim", 0)
    vd = ctx.dims(v)
    gd = ctx.dims(g) if isinstance(g, torch.Tensor) else []
    if not isinstance(out, torch.Tensor) or not all(isinstance(d, ParamDim) for d in vd):
        return ctx.opaque(args, kwargs, out, "weight normalisation of a tensor that is not a parameter")
    norm_axis = None if dim in (None, -1) else dim % v.dim()  # NOTE: -1: one norm over the whole tensor
    for axis, d in enumerate(vd):
        if axis == norm_axis:
            if len(gd) == len(vd) and isinstance(gd[axis], ParamDim) and g.shape[axis] == v.shape[axis]:
                ctx.store.param_source(d, gd[axis])
        else:
            ctx.store.mixed_read(d.tensor, axis, f"normalised over by weight normalisation in {ctx.where}: "
                                                 f"a cut rescales the kept rows")
            ctx.mixing.add(owner(d.tensor))  # NOTE: the layer's output then differs from the dense one's
    ctx.set(out, vd)


def scales(model: nn.Module) -> dict[tuple[str, int], str]:
    """Each weight-normed ``v`` along its norm axis -> its scale ``g`` (names in ``model``): a zero
    row of ``v`` has no direction (0/0), so a masked reference zeroes that row through ``g``."""
    from torch.nn.utils.parametrizations import _WeightNorm
    from torch.nn.utils.weight_norm import WeightNorm

    found: dict[tuple[str, int], str] = {}
    for at, chain in parametrizations(model):
        for p in chain:
            if isinstance(p, _WeightNorm) and p.dim not in (None, -1):
                found[(f"{at}.original1", p.dim)] = f"{at}.original0"
    for name, module in model.named_modules():
        at = f"{name}." if name else ""
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, WeightNorm) and hook.dim not in (None, -1):
                found[(f"{at}{hook.name}_v", hook.dim)] = f"{at}{hook.name}_g"
    return found
