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


def _conv_cases() -> list[tuple]:
    cases = []
    for stride, padding, dilation, groups in [(1, 0, 1, 1), (2, 1, 1, 1), ((2, 1), (0, 2), (1, 2), 2), (3, "valid", 1, 4)]:
        cases.append((torch.conv2d, (_m(2, 8, 17, 13), _m(6 if groups != 4 else 8, 8 // groups, 3, 5), _m(6 if groups != 4 else 8),
                                     stride, padding, dilation, groups), {}))
    cases.append((torch.conv1d, (_m(3, 4, 20), _m(5, 4, 3)), {"stride": 2, "padding": 1}))
    cases.append((torch.conv3d, (_m(1, 2, 5, 6, 7), _m(4, 2, 1, 3, 3)), {"padding": (0, 1, 1)}))
    return cases


SHAPED = _conv_cases() + [
    (F.linear, (_m(2, 5, 7), _m(3, 7), _m(3)), {}),
    (F.linear, (_m(7), _m(3, 7)), {}),
    (F.adaptive_avg_pool2d, (_m(2, 3, 9, 7), 1), {}),
    (F.adaptive_avg_pool2d, (_m(3, 9, 7), (4, None)), {}),
    (F.adaptive_avg_pool1d, (_m(2, 3, 9), 4), {}),
    (F.adaptive_avg_pool3d, (_m(1, 2, 5, 6, 7), (1, 2, 3)), {}),
]


@pytest.mark.parametrize(("func", "args", "kwargs"), SHAPED, ids=lambda c: getattr(c, "__name__", ""))
def test_closed_form_shapes_match_the_real_op(func, args, kwargs) -> None:  # type: ignore[no-untyped-def]
    test_shape_and_dtype_match_the_real_op(func, args, kwargs)


@pytest.mark.parametrize(("func", "args", "kwargs"), [
    (torch.conv2d, (_m(2, 8, 5, 5), _m(6, 4, 3, 3)), {}),  # channel mismatch: the real op raises
    (torch.conv2d, (_m(2, 8, 5, 5), _m(6, 8, 3, 3)), {"padding": "same"}),
    (torch.conv2d, (_m(2, 8, 2, 2), _m(6, 8, 3, 3)), {}),  # empty output
    (torch.conv2d, (_m(2, 8, 5, 5).to(memory_format=torch.channels_last), _m(6, 8, 3, 3)), {}),
    (F.linear, (_m(2, 5), _m(3, 4)), {}),
    (F.linear, (_m(2, 5), _m(3, 5, dtype=torch.float16)), {}),
])
def test_unusual_inputs_fall_back_to_the_real_op(func, args, kwargs) -> None:  # type: ignore[no-untyped-def]
    assert fast_result(func, args, kwargs) is NotImplemented
