"""EVBMF: recovers the rank of a low-rank matrix plus noise, and the noise variance."""

from __future__ import annotations

import numpy as np
import pytest

from prunekit.decompose import evbmf_rank
from prunekit.decompose.vbmf import evbmf_noise_variance, evbmf_threshold_tau


def test_threshold_tau_matches_the_paper_constant() -> None:
    # NOTE: Nakajima et al. (2013) give tau ~= 2.5129 sqrt(alpha) (exact at alpha = 1).
    assert evbmf_threshold_tau(1.0) == pytest.approx(2.5129, abs=1e-3)


@pytest.mark.parametrize("rows, cols, rank, sigma", [(40, 60, 5, 0.1), (64, 128, 10, 0.05), (90, 30, 4, 0.3)])
def test_known_rank_plus_noise_is_recovered(rows: int, cols: int, rank: int, sigma: float) -> None:
    rng = np.random.default_rng(rank)
    y = rng.standard_normal((rows, rank)) @ rng.standard_normal((rank, cols))
    y += sigma * rng.standard_normal((rows, cols))
    s = np.linalg.svd(y, compute_uv=False)
    assert evbmf_rank(s, rows, cols) == rank
    assert evbmf_noise_variance(s, rows, cols) == pytest.approx(sigma ** 2, rel=0.15)


def test_pure_noise_keeps_at_least_one_component() -> None:
    rng = np.random.default_rng(0)
    s = np.linalg.svd(rng.standard_normal((30, 50)), compute_uv=False)
    assert evbmf_rank(s, 30, 50) == 1
