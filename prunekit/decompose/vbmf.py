"""Empirical variational Bayesian matrix factorisation (EVBMF): a rank estimate with no knob.

Nakajima, Sugiyama, Babacan & Tomioka, "Global analytic solution of fully-observed variational
Bayesian matrix factorization", JMLR 14 (2013). For an L x M matrix (L <= M, alpha = L / M) with
singular values gamma_h and Gaussian noise of variance sigma^2, the EVB solution keeps exactly the
components with

    gamma_h > sigma * sqrt(M * (1 + tau) * (1 + alpha / tau)),

where tau is the zero of  Phi(tau) + Phi(tau / alpha),  Phi(z) = log(z + 1) / z - 1/2
(tau ~ 2.5129 sqrt(alpha)). The unknown sigma^2 is the minimiser of the paper's objective

    Omega(sigma^2) = sum_h psi(gamma_h^2 / (M sigma^2)),
    psi(x) = x - log x + [x > x_] (log(t + 1) + alpha log(t / alpha + 1) - t),
    t(x) = ((x - 1 - alpha) + sqrt((x - 1 - alpha)^2 - 4 alpha)) / 2,   x_ = (1 + tau)(1 + alpha / tau).

No maintained library implements it, so it is written here from the formulas above (numpy/scipy).
Kim et al. (2016) use it to pick Tucker-2 ranks from the kernel's unfoldings.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from prunekit.errors import require

__all__ = ["evbmf_rank", "evbmf_threshold_tau", "evbmf_noise_variance"]


def _optimize() -> Any:
    """scipy.optimize, imported on use: scipy is optional (the decompose extra), not needed to import prunekit."""
    return require("scipy.optimize", pip_name="scipy", extra="decompose", feature="EVBMF rank selection")


def evbmf_threshold_tau(alpha: float) -> float:
    """tau_ for aspect ratio ``alpha`` = L/M in (0, 1]: the zero of Phi(tau) + Phi(tau / alpha)."""

    def phi(z: float) -> float:
        return float(np.log1p(z) / z - 0.5)

    return float(_optimize().brentq(lambda t: phi(t) + phi(t / alpha), 1e-6, 1e3 * max(1.0, alpha), xtol=1e-12))


def _objective(sigma2: float, gammas2: np.ndarray, m: int, alpha: float, tau: float) -> float:
    x = gammas2 / (m * sigma2)
    x_low = (1 + tau) * (1 + alpha / tau)
    psi = x - np.log(x)
    big = x > x_low
    if big.any():
        xb = x[big]
        disc = np.sqrt(np.maximum((xb - 1 - alpha) ** 2 - 4 * alpha, 0.0))
        t = ((xb - 1 - alpha) + disc) / 2
        psi[big] += np.log(t + 1) + alpha * np.log(t / alpha + 1) - t
    return float(psi.sum())


def evbmf_noise_variance(singular_values: np.ndarray, rows: int, cols: int) -> float:
    """The EVB estimate of the noise variance sigma^2 of a ``rows`` x ``cols`` matrix."""
    l, m = min(rows, cols), max(rows, cols)
    alpha = l / m
    tau = evbmf_threshold_tau(alpha)
    gammas2 = np.sort(np.asarray(singular_values, dtype=np.float64) ** 2)[::-1][:l]
    gammas2 = np.maximum(gammas2, np.finfo(np.float64).tiny)
    upper = gammas2.sum() / (l * m)
    # NOTE: below the smallest gamma^2 / (M x_) every component would count as signal; the
    # objective's minimiser lies above it (the paper's lower bound, simplified).
    lower = max(gammas2[-1] / (m * (1 + tau) * (1 + alpha / tau)), upper * 1e-12)
    grid = np.geomspace(lower, upper, 200)
    values = [_objective(s, gammas2, m, alpha, tau) for s in grid]
    best = int(np.argmin(values))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    if hi <= lo:
        return float(grid[best])
    found = _optimize().minimize_scalar(lambda s: _objective(np.exp(s), gammas2, m, alpha, tau),
                            bounds=(np.log(lo), np.log(hi)), method="bounded",
                            options={"xatol": 1e-10})
    return float(np.exp(found.x))


def evbmf_rank(singular_values: np.ndarray, rows: int, cols: int) -> int:
    """How many components EVBMF keeps for a ``rows`` x ``cols`` matrix with these singular values.

    At least 1 (a layer factorised at rank 0 would output a constant).
    """
    l, m = min(rows, cols), max(rows, cols)
    alpha = l / m
    tau = evbmf_threshold_tau(alpha)
    sigma2 = evbmf_noise_variance(singular_values, rows, cols)
    threshold = np.sqrt(sigma2 * m * (1 + tau) * (1 + alpha / tau))
    return max(1, int((np.asarray(singular_values, dtype=np.float64) > threshold).sum()))
