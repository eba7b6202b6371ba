"""Exact expected quality of (prompt, N) from a table's probabilities.

For evaluation only (benchmarks, tests, the simulator's checks and the demo's oracle): the
optimizer itself never reads probabilities.

Majority vote (:func:`majority_credit_exact`): the multinomial generating function
``N! [x^N] Π_c Σ_k (p_c x)^k / k!``, split by the gold answer's vote count g and by how
many wrong answers tie with it (ties split uniformly), so no sampling noise enters.

Best-of-N (:func:`best_of_n_exact`): with the outcomes sorted by score x_(1) ≤ … ≤ x_(M)
and F_j the probability of a score at most x_(j), the best of N independent samples is
x_(j) with probability F_j^N − F_{j−1}^N.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["best_of_n_exact", "majority_credit_exact"]


def majority_credit_exact(
    cat_probs: npt.NDArray[np.float64], answers: npt.NDArray[np.int64], n_max: int
) -> npt.NDArray[np.float64]:
    """(P, Q, n_max): expected majority-vote credit of N = 1..n_max samples per cell.

    ``cat_probs``: (P, Q, C); ``answers``: (Q,) gold categories.
    """
    prompts, questions, categories = cat_probs.shape
    probs = cat_probs / cat_probs.sum(axis=-1, keepdims=True)
    gold = np.take_along_axis(probs, answers[None, :, None], axis=-1)[..., 0]
    wrong_mask = np.ones(categories, bool)[None, None, :] != (
        np.arange(categories)[None, None, :] == answers[None, :, None]
    )
    wrong = probs[np.broadcast_to(wrong_mask, probs.shape)].reshape(
        prompts, questions, categories - 1
    )
    degree = n_max + 1
    factorial = np.array([math.factorial(k) for k in range(degree)], dtype=np.float64)
    # powers[..., j, k] = wrong_j^k / k!
    powers = wrong[..., None] ** np.arange(degree) / factorial
    gold_powers = gold[..., None] ** np.arange(degree) / factorial
    # credit_by_n[..., N] accumulates Σ_g Σ_t coef / (1 + t)
    credit = np.zeros((prompts, questions, degree))
    ties = categories  # t ranges over 0..C-1
    for g in range(1, n_max + 1):
        # poly[..., d, t]: coefficient of x^d y^t; starts as (p_gold x)^g / g!
        poly = np.zeros((prompts, questions, degree, ties))
        poly[..., g, 0] = gold_powers[..., g]
        for j in range(categories - 1):
            nxt = np.zeros_like(poly)
            for k in range(0, min(g, n_max - g) + 1):
                term = powers[..., j, k][..., None, None]
                shifted = poly[..., : degree - k, :] * term
                if k < g:
                    nxt[..., k:, :] += shifted
                else:  # wrong answer j ties with gold: count it in y
                    nxt[..., k:, 1:] += shifted[..., :-1]
            poly = nxt
        credit += (poly / (1.0 + np.arange(ties))).sum(axis=-1)
    return credit[..., 1:] * factorial[1:]


def best_of_n_exact(
    scores: npt.NDArray[np.float64], probs: npt.NDArray[np.float64], n_max: int
) -> npt.NDArray[np.float64]:
    """(P, Q, n_max): E[max of N samples' score] for N = 1..n_max, per cell.

    ``scores``: (P, Q, M) the score of each outcome (e.g. ``BestOfNTable.scores(weights)``);
    ``probs``: (P, Q, M) its probability (renormalised here against rounding).
    """
    if scores.shape != probs.shape or scores.ndim != 3:
        raise ValueError(f"scores {scores.shape} and probs {probs.shape} must be equal (P, Q, M)")
    order = np.argsort(scores, axis=-1)
    ranked = np.take_along_axis(scores, order, axis=-1)
    weights = np.take_along_axis(probs / probs.sum(axis=-1, keepdims=True), order, axis=-1)
    cdf = np.cumsum(weights, axis=-1)
    cdf[..., -1] = 1.0
    below = np.concatenate([np.zeros_like(cdf[..., :1]), cdf[..., :-1]], axis=-1)
    n = np.arange(1, n_max + 1, dtype=np.float64)
    # P(best of N is outcome j) = F_j^N − F_{j−1}^N, for every N at once: (P, Q, M, n_max)
    chance = cdf[..., None] ** n - below[..., None] ** n
    return np.asarray(np.einsum("pqm,pqmn->pqn", ranked, chance), dtype=np.float64)
