"""Exact expected quality of every arm of a table, for checks and for the demo's oracle.

``majority_accuracy(cat_probs, answers, n_max)`` is the expected correctness of a majority
vote over N samples (ties broken uniformly at random), for N = 1..n_max, averaged over
questions; the exact per-cell kernel is :func:`optimizer.exact.majority_credit_exact`.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from optimizer.exact import majority_credit_exact

__all__ = ["expected_max_standard_normal", "majority_accuracy", "majority_credit_exact"]


def majority_accuracy(
    cat_probs: npt.NDArray[np.float64], answers: npt.NDArray[np.int64], n_max: int
) -> npt.NDArray[np.float64]:
    """(P, n_max): expected majority-vote accuracy of each prompt at N = 1..n_max."""
    credit = majority_credit_exact(cat_probs, answers, n_max)
    return np.asarray(credit.mean(axis=1), dtype=np.float64)


def expected_max_standard_normal(n_max: int) -> npt.NDArray[np.float64]:
    """(n_max,): E[max of N iid standard normals] for N = 1..n_max (numerical quadrature)."""
    grid = np.linspace(-9.0, 9.0, 20_001)
    step = grid[1] - grid[0]
    density = np.exp(-0.5 * grid**2) / math.sqrt(2.0 * math.pi)
    cdf = 0.5 * (1.0 + np.array([math.erf(x / math.sqrt(2.0)) for x in grid]))
    n = np.arange(1, n_max + 1)[:, None]
    integrand = grid[None, :] * n * density[None, :] * cdf[None, :] ** (n - 1)
    return np.asarray(integrand.sum(axis=1) * step, dtype=np.float64)
