"""The tracer's shortcut meta results match what the real meta kernels return."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from prunekit.graph.fastmeta import fast_result


def _m(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(shape, device="meta", dtype=dtype)


CASES = [
    (F.relu, (_m(2, 3, 4, 4),), {}),
    (F.hardswish, (_m(2, 3),), {}),
    (torch.Tensor.sigmoid, (_m(5),), {}),
    (F.batch_norm, (_m(2, 3, 4, 4), _m(3), _m(3)), {"training": False}),
    (F.layer_norm, (_m(2, 7, 8), (8,)), {}),
    (F.dropout, (_m(2, 3),), {"p": 0.1, "training": False}),
    (torch.add, (_m(2, 3, 1, 4), _m(3, 5, 1)), {}),
    (torch.Tensor.__mul__, (_m(2, 3), 2.5), {}),
    (torch.Tensor.__add__, (_m(2, 3, dtype=torch.int64), 0.5), {}),
    (torch.Tensor.__radd__, (_m(4, 1), _m(1, 6)), {}),
    (torch.Tensor.__truediv__, (_m(2, 3, dtype=torch.int64), 2), {}),
]


@pytest.mark.parametrize(("func", "args", "kwargs"), CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_shape_and_dtype_match_the_real_op(func, args, kwargs) -> None:  # type: ignore[no-untyped-def]
    fast = fast_result(func, args, kwargs)
    real = func(*args, **kwargs)
    assert fast is not NotImplemented
    assert fast.shape == real.shape and fast.dtype == real.dtype and fast.device.type == "meta"


def test_in_place_returns_the_same_tensor() -> None:
    x = _m(2, 3)
    assert fast_result(torch.Tensor.__iadd__, (x, _m(3)), {}) is x
    assert fast_result(F.relu, (x,), {"inplace": True}) is x
    # an in-place op that would have to grow x is left to the real op (which raises)
    assert fast_result(torch.Tensor.__iadd__, (x, _m(4, 2, 3)), {}) is NotImplemented


@pytest.mark.parametrize("args", [(torch.zeros(2, 3),), (_m(2, 3), torch.zeros(3))])
def test_real_tensors_and_out_fall_back(args) -> None:  # type: ignore[no-untyped-def]
    func = F.relu if len(args) == 1 else torch.add
    assert fast_result(func, args, {}) is NotImplemented
    assert fast_result(torch.add, (_m(2), _m(2)), {"out": _m(2)}) is NotImplemented


def test_division_of_integers_is_float() -> None:
    for func in (torch.div, torch.Tensor.div, torch.Tensor.__truediv__):
        args = (_m(2, 3, dtype=torch.int64), _m(3, dtype=torch.int32))
        assert fast_result(func, args, {}).dtype == func(*args).dtype == torch.float32
