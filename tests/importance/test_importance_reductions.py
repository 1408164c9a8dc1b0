"""index_powers: per-axis sums of |w|^p, shared across groups inside shared_reductions()."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from _allocations import LargestNew
from prunekit.importance.reductions import index_powers, shared_reductions
from prunekit.structured import StructuredPruner


@pytest.mark.parametrize("shape", [(6, 5, 3, 3), (6, 5), (6, 5, 1, 1), (4, 3, 2, 2, 2), (7,), (300, 2000), (70, 4000, 1)])
@pytest.mark.parametrize("power", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_index_powers_match_a_direct_sum(shape: tuple[int, ...], power: int, dtype: torch.dtype) -> None:
    """Also for weights reduced in several blocks of rows (300 x 2000: 3 blocks), half-precision
    weights summed in float32 (no float32 copy of the whole weight is made) and float64 weights
    summed in float64 (torch refuses to sum them into float32); every result is float32."""
    torch.manual_seed(0)
    w = torch.randn(shape).to(dtype)
    for axis in range(w.dim()):
        expected = w.float().abs().pow(power).movedim(axis, 0).reshape(w.shape[axis], -1).sum(1)
        assert index_powers(w, axis, power).dtype == torch.float32
        torch.testing.assert_close(index_powers(w, axis, power), expected, rtol=1e-4, atol=1e-3)
        with shared_reductions():
            torch.testing.assert_close(index_powers(w, axis, power), expected, rtol=1e-4, atol=1e-3)


def test_a_float64_model_is_pruned_by_the_default_importance() -> None:
    """l2 of float64 conv weights (summed over the kernel with vector_norm) once failed in torch."""
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 8, 3)).double()
    pruned = StructuredPruner({"ratio": 0.5}).fit_transform(model, torch.randn(1, 3, 8, 8, dtype=torch.float64))
    assert pruned[0].out_channels == 8 and pruned[2].weight.dtype == torch.float64


def test_shared_reductions_reuse_within_the_block_and_see_in_place_changes() -> None:
    w = torch.nn.Parameter(torch.ones(3, 2))
    with shared_reductions():
        first = index_powers(w, 0, 2)
        assert index_powers(w, 0, 2) is first  # computed once
        with torch.no_grad():
            w.mul_(2)  # bumps the version counter: the memo must not serve stale sums
        torch.testing.assert_close(index_powers(w, 0, 2), torch.full((3,), 8.0))
    assert index_powers(w, 1, 2) is not index_powers(w, 1, 2)  # outside: nothing is kept


@pytest.mark.parametrize("shape", [(300, 2000), (64, 128, 3, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_no_copy_of_a_whole_weight_is_made(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    """Scoring reduces every weight of a model: a float32 or powered copy of each, even freed at
    once, left the process of ResNet-50 0.57x of the model larger (benchmarks/scale.py)."""
    w = torch.randn(shape).to(dtype)
    with LargestNew() as seen:
        index_powers(w, 0, 2)
    assert seen.most <= w.numel() // 2, seen.most
