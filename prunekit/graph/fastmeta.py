"""Shape-only results for the commonest ops while tracing on the meta device.

Many meta kernels are Python reference implementations (decompositions of batch_norm, type
promotion and stride logic of every elementwise op), which made them most of the cost of a trace.
For ops whose output is, by definition, shaped like their input (activations, dropout, norms), the
broadcast of two inputs (add, mul, ...), or given by a closed formula (convolution, linear,
adaptive average pooling), the tracer builds the empty meta result directly. Anything unusual
(``out=``, a real tensor, channels-last input, an unexpected argument or shape) falls back to the
real call, which also raises the real error for inputs that do not fit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from typing_extensions import TypeIs

__all__ = ["fast_result"]

_Fast = Callable[[tuple[Any, ...], dict[str, Any]], Any]
_NO = NotImplemented


def _meta(t: Any) -> TypeIs[torch.Tensor]:
    return isinstance(t, torch.Tensor) and t.device.type == "meta"


def _like_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``f(x, ...)`` -> a tensor shaped like ``x``; ``inplace=True`` returns ``x`` itself."""
    x = args[0] if args else None
    if not _meta(x) or "out" in kwargs or any(isinstance(a, torch.Tensor) and not _meta(a) for a in args[1:]):
        return _NO
    if kwargs.get("inplace") is True:
        return x
    return _empty(x.shape, x.dtype) if x.is_contiguous() else torch.empty_like(x)


def _empty(shape: Any, dtype: torch.dtype) -> torch.Tensor:
    # NOTE: torch.empty on meta is ~10x cheaper than empty_like (no stride-permutation logic).
    return torch.empty(shape, dtype=dtype, device="meta")


def _ints(value: Any, n: int) -> tuple[int, ...] | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,) * n
    if isinstance(value, (tuple, list)) and len(value) == n and all(type(v) is int for v in value):
        return tuple(value)
    return None


_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")


def _conv(nd: int) -> _Fast:
    """``conv{nd}d``: ``(N, C_out, *spatial)`` with the usual size formula."""
    def fast(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if len(args) > len(_CONV_ARGS) or any(k not in _CONV_ARGS for k in kwargs):
            return _NO
        p = {**dict(zip(_CONV_ARGS, args)), **kwargs}
        x, w, b = p.get("input"), p.get("weight"), p.get("bias")
        if not (_meta(x) and _meta(w) and (b is None or _meta(b))) or x.dim() != nd + 2 or w.dim() != nd + 2:
            return _NO
        groups = p.get("groups", 1)
        if type(groups) is not int or x.shape[1] != w.shape[1] * groups or x.dtype != w.dtype \
                or not x.is_contiguous():
            return _NO
        stride, dilation = _ints(p.get("stride", 1), nd), _ints(p.get("dilation", 1), nd)
        padding = p.get("padding", 0)
        padding = (0,) * nd if padding == "valid" else _ints(padding, nd)
        if stride is None or dilation is None or padding is None:
            return _NO
        spatial = [(size + 2 * pad - dil * (k - 1) - 1) // s + 1
                   for size, pad, dil, k, s in zip(x.shape[2:], padding, dilation, w.shape[2:], stride)]
        if min(spatial) < 1:
            return _NO
        return _empty((x.shape[0], w.shape[0], *spatial), x.dtype)

    return fast


def _linear(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if len(args) > 3 or any(k not in ("input", "weight", "bias") for k in kwargs):
        return _NO
    p = {**dict(zip(("input", "weight", "bias"), args)), **kwargs}
    x, w, b = p.get("input"), p.get("weight"), p.get("bias")
    if not (_meta(x) and _meta(w) and (b is None or _meta(b))) or w.dim() != 2 or x.dim() < 1 \
            or x.shape[-1] != w.shape[1] or x.dtype != w.dtype or not x.is_contiguous():
        return _NO
    return _empty((*x.shape[:-1], w.shape[0]), x.dtype)


def _adaptive_avg_pool(nd: int) -> _Fast:
    """``adaptive_avg_pool{nd}d(x, output_size)``: the last ``nd`` sizes replaced (None keeps one)."""
    def fast(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if len(args) != 2 or kwargs or not _meta(args[0]) or args[0].dim() not in (nd + 1, nd + 2):
            return _NO
        x, size = args
        size = (size,) * nd if isinstance(size, int) or size is None else tuple(size)
        if len(size) != nd or not all(s is None or (type(s) is int and s > 0) for s in size):
            return _NO
        tail = [x.shape[-nd + i] if s is None else s for i, s in enumerate(size)]
        return _empty((*x.shape[:-nd], *tail), x.dtype)

    return fast


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
for _nd, _fn in ((1, torch.conv1d), (2, torch.conv2d), (3, torch.conv3d)):
    _TABLE[_fn] = _conv(_nd)
_TABLE[F.linear] = _linear
_TABLE[F.adaptive_avg_pool1d] = _adaptive_avg_pool(1)
_TABLE[F.adaptive_avg_pool2d] = _adaptive_avg_pool(2)
_TABLE[F.adaptive_avg_pool3d] = _adaptive_avg_pool(3)
for _name in ("__radd__", "__rmul__"):
    _TABLE[getattr(torch.Tensor, _name)] = _broadcast_reflected
for _name in ("__iadd__", "__isub__", "__imul__", "__itruediv__"):
    _TABLE[getattr(torch.Tensor, _name)] = _in_place


def fast_result(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The op's meta result built directly, or ``NotImplemented`` to run the real op."""
    fast = _TABLE.get(func)
    return _NO if fast is None else fast(args, kwargs)
