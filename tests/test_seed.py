"""Library randomness leaves the caller's global RNG as it was (no process-wide seed)."""

from __future__ import annotations

import pytest
import torch

from prunekit._seed import seeded


def test_seeded_repeats_and_restores_the_global_stream() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with seeded(7):
        first = torch.rand(2)
    with seeded(7):
        second = torch.rand(2)
    assert torch.equal(first, second)
    assert torch.equal(torch.rand(3), expected)  # NOTE: as if the two blocks never ran.


def test_seeded_restores_after_an_error() -> None:
    state = torch.random.get_rng_state()
    with pytest.raises(RuntimeError), seeded(1):
        torch.rand(5)
        raise RuntimeError("boom")
    assert torch.equal(torch.random.get_rng_state(), state)
