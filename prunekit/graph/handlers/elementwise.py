"""Elementwise ops: each output position reads the same position of every (broadcast) input."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._pytree import tree_flatten

from prunekit.graph.constraints import Dim
from prunekit.graph.registry import register_rule, resolve

_UNARY = """abs absolute neg negative exp exp2 expm1 log log2 log10 log1p sqrt rsqrt square sign sin cos
tan tanh sinh cosh asin acos atan erf erfc erfinv sigmoid logit relu relu6 gelu silu mish hardswish
hardsigmoid hardtanh leaky_relu elu selu celu softplus softsign tanhshrink hardshrink softshrink
threshold reciprocal floor ceil round trunc frac clamp clamp_min clamp_max clip nan_to_num
dropout dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout contiguous clone detach
to float double half bfloat16 type type_as zeros_like ones_like empty_like full_like rand_like
randn_like logical_not bitwise_not isnan isinf isfinite requires_grad_ fill_ zero_ cpu cuda conj conj_physical
resolve_conj resolve_neg positive sgn angle real imag logsigmoid rrelu""".split()
_BINARY = """add sub subtract mul multiply div divide true_divide floor_divide remainder fmod pow
float_power maximum minimum fmax fmin atan2 hypot eq ne lt le gt ge where masked_fill lerp addcmul
addcdiv logical_and logical_or logical_xor bitwise_and bitwise_or bitwise_xor copysign rsub polar complex""".split()
_DUNDER = """__add__ __radd__ __iadd__ __sub__ __rsub__ __isub__ __mul__ __rmul__ __imul__ __truediv__
__rtruediv__ __itruediv__ __floordiv__ __rfloordiv__ __mod__ __rmod__ __pow__ __rpow__ __ipow__
__neg__ __pos__ __abs__ __and__ __or__ __xor__ __invert__ __eq__ __ne__ __lt__ __le__ __gt__ __ge__
__rand__ __ror__ __rxor__ __iand__ __ior__ __ixor__""".split()
_INPLACE = [f"{n}_" for n in _UNARY + _BINARY if not n.endswith("_")] + ["copy_"]  # x.copy_(y): y's positions


_UNSET: Any = object()
# Ops whose result holds one value at every position, and ops that keep that so (casts, copies).
_FILLS = frozenset({"zeros_like", "ones_like", "full_like"})
_KEEP_FILL = frozenset({"to", "float", "double", "half", "bfloat16", "type", "type_as", "contiguous", "clone",
                        "detach", "int", "long", "short", "bool", "byte", "char"})


def _tensors(obj: Any) -> list[torch.Tensor]:
    leaves, _ = tree_flatten(obj)
    return [t for t in leaves if isinstance(t, torch.Tensor)]


# Tensor methods only: ``torch.int`` and the like are dtypes
_CASTS = [getattr(torch.Tensor, n) for n in ("int", "long", "short", "bool", "byte", "char")]


@register_rule(*resolve(*_UNARY, *_BINARY, *_DUNDER, *_INPLACE), *_CASTS)
def elementwise(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """Right-aligned broadcasting: an input dim of the output's size shares its channels."""
    inputs = _tensors((args, kwargs))
    op = ctx.current.rpartition(".")[2]
    if isinstance(out, torch.Tensor) and (op in _FILLS or (op in _KEEP_FILL and inputs and id(inputs[0]) in ctx.fills)):
        ctx.fills.add(id(out))  # NOTE: its channels hold one value: picking one of them picks no channel
    if op in ("type_as", "to"):
        inputs = inputs[:1]  # NOTE: the other tensor lends only its dtype and device (JetMoE's router)
    for result in _tensors(out):
        merged: list[Dim] = [_UNSET] * result.dim()
        for t in inputs:
            if t.dim() > result.dim():
                return ctx.opaque(args, kwargs, out, "input has more dims than the output")
            dims = ctx.dims(t)
            for k in range(1, t.dim() + 1):
                size, want = t.shape[-k], result.shape[-k]
                if size == 1 and want != 1:
                    continue  # broadcast: one value for every channel
                if size != want:
                    return ctx.opaque(args, kwargs, out, "shapes do not broadcast")
                slot = merged[-k]
                merged[-k] = dims[-k] if slot is _UNSET else ctx.store.unify(slot, dims[-k], ctx.where)
        ctx.set(result, [None if d is _UNSET else d for d in merged])
