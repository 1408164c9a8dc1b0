"""index_powers: per-axis sums of |w|^p, shared across groups inside shared_reductions()."""

from __future__ import annotations

import pytest
import torch

from prunekit.importance.reductions import index_powers, shared_reductions


@pytest.mark.parametrize("shape", [(6, 5, 3, 3), (6, 5), (6, 5, 1, 1), (4, 3, 2, 2, 2), (7,)])
@pytest.mark.parametrize("power", [1, 2])
def test_index_powers_match_a_direct_sum(shape: tuple[int, ...], power: int) -> None:
    torch.manual_seed(0)
    w = torch.randn(shape)
    for axis in range(w.dim()):
        expected = w.abs().pow(power).movedim(axis, 0).reshape(w.shape[axis], -1).sum(1)
        torch.testing.assert_close(index_powers(w, axis, power), expected)
        with shared_reductions():
            torch.testing.assert_close(index_powers(w, axis, power), expected)


def test_shared_reductions_reuse_within_the_block_and_see_in_place_changes() -> None:
    w = torch.nn.Parameter(torch.ones(3, 2))
    with shared_reductions():
        first = index_powers(w, 0, 2)
        assert index_powers(w, 0, 2) is first  # computed once
        with torch.no_grad():
            w.mul_(2)  # bumps the version counter: the memo must not serve stale sums
        torch.testing.assert_close(index_powers(w, 0, 2), torch.full((3,), 8.0))
    assert index_powers(w, 1, 2) is not index_powers(w, 1, 2)  # outside: nothing is kept
