"""Shape-only results for the commonest ops while tracing on the meta device.

Many meta kernels are Python reference implementations (decompositions of batch_norm, type
promotion and stride logic of every elementwise op), which made them most of the cost of a trace.
For ops whose output is, by definition, shaped like their input (activations, dropout, norms) or
the broadcast of two inputs (add, mul, ...), the tracer builds the empty meta result directly.
Anything unusual (``out=``, a real tensor, an unexpected argument) falls back to the real call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812

__all__ = ["fast_result"]

_Fast = Callable[[tuple[Any, ...], dict[str, Any]], Any]
_NO = NotImplemented


def _meta(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.device.type == "meta"


def _like_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``f(x, ...)`` -> a tensor shaped like ``x``; ``inplace=True`` returns ``x`` itself."""
    x = args[0] if args else None
    if not _meta(x) or "out" in kwargs or any(isinstance(a, torch.Tensor) and not _meta(a) for a in args[1:]):
        return _NO
    if kwargs.get("inplace") is True:
        return x
    return torch.empty_like(x)


def _activation(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # NOTE: a second positional argument may be `inplace` (F.relu(x, True)); let the real op decide.
    return _like_input(args, kwargs) if len(args) == 1 else _NO


def _broadcast(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if len(args) != 2 or kwargs:
        return _NO
    a, b = args
    if not (_meta(a) and (_meta(b) or isinstance(b, (int, float, bool)))):
        return _NO
    if not isinstance(b, torch.Tensor):
        return torch.empty(a.shape, dtype=torch.result_type(a, b), device="meta")
    shape = torch.broadcast_shapes(a.shape, b.shape)
    return torch.empty(shape, dtype=torch.result_type(a, b), device="meta")


def _true_divide(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    out = _broadcast(args, kwargs)
    if out is _NO or out.dtype.is_floating_point or out.dtype.is_complex:
        return out
    return torch.empty(out.shape, dtype=torch.get_default_dtype(), device="meta")  # int / int -> float


def _broadcast_reflected(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return _broadcast(args, kwargs)  # radd/rmul: the output shape does not depend on the order


def _in_place(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if len(args) != 2 or kwargs or not _meta(args[0]):
        return _NO
    other = args[1]
    if isinstance(other, torch.Tensor) and (not _meta(other)
                                            or torch.broadcast_shapes(args[0].shape, other.shape) != args[0].shape):
        return _NO
    return args[0]


_ACTIVATIONS = ("relu", "relu6", "hardswish", "hardsigmoid", "silu", "gelu", "sigmoid", "tanh", "mish")
_TABLE: dict[Any, _Fast] = {}
for _name in _ACTIVATIONS:
    for _owner in (F, torch, torch.Tensor):
        _fn = getattr(_owner, _name, None)
        if _fn is not None:
            _TABLE[_fn] = _activation
for _fn in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.batch_norm, torch.batch_norm,
            F.layer_norm, F.group_norm, F.instance_norm, torch.Tensor.contiguous):
    _TABLE[_fn] = _like_input
for _name in ("add", "sub", "mul", "div"):
    _TABLE[getattr(torch, _name)] = _true_divide if _name == "div" else _broadcast
    _TABLE[getattr(torch.Tensor, _name)] = _true_divide if _name == "div" else _broadcast
    _TABLE[getattr(torch.Tensor, f"{_name}_")] = _in_place
for _name in ("__add__", "__sub__", "__mul__"):
    _TABLE[getattr(torch.Tensor, _name)] = _broadcast
_TABLE[torch.Tensor.__truediv__] = _true_divide
for _name in ("__radd__", "__rmul__"):
    _TABLE[getattr(torch.Tensor, _name)] = _broadcast_reflected
for _name in ("__iadd__", "__isub__", "__imul__", "__itruediv__"):
    _TABLE[getattr(torch.Tensor, _name)] = _in_place


def fast_result(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The op's meta result built directly, or ``NotImplemented`` to run the real op."""
    fast = _TABLE.get(func)
    return _NO if fast is None else fast(args, kwargs)
