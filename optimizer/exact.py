"""Exact expected majority-vote accuracy of (prompt, N) from a table's probabilities.

For evaluation only (benchmarks, tests): the optimizer itself never reads probabilities.
Enumerates every vote count vector of N samples over C categories (multinomial
probabilities, ties split uniformly), so it is exact; cost grows as C(N+C-1, C-1).
"""

from __future__ import annotations

from itertools import combinations
from math import lgamma

import numpy as np
import numpy.typing as npt

__all__ = ["compositions", "majority_accuracy"]


def compositions(total: int, parts: int) -> npt.NDArray[np.int64]:
    """Every vector of ``parts`` non-negative ints summing to ``total``: (count, parts)."""
    rows = []
    for bars in combinations(range(total + parts - 1), parts - 1):
        edges = (-1, *bars, total + parts - 1)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(parts)])
    return np.array(rows, dtype=np.int64).reshape(-1, parts)


def majority_accuracy(
    cat_probs: npt.NDArray[np.float64],
    answers: npt.NDArray[np.int64],
    n_max: int,
    *,
    chunk: int = 128,
) -> npt.NDArray[np.float64]:
    """Expected majority-vote credit (P, Q, n_max).

    ``cat_probs`` (P, Q, C): category probabilities; ``answers`` (Q,): gold categories.
    """
    p_count, q_count, c = cat_probs.shape
    probs = cat_probs.reshape(-1, c)
    gold = np.tile(answers, p_count)
    # log 0 as a large negative number: 0·(−1e4) = 0 keeps empty categories exact.
    log_probs = np.where(probs > 0, np.log(np.where(probs > 0, probs, 1.0)), -1e4)
    out = np.empty((probs.shape[0], n_max))
    lg = np.vectorize(lgamma, otypes=[np.float64])
    for k in range(1, n_max + 1):
        votes = compositions(k, c)
        log_coef = lgamma(k + 1) - lg(votes + 1).sum(axis=1)
        top = votes.max(axis=1, keepdims=True)
        credit = (votes == top) / (votes == top).sum(axis=1, keepdims=True)  # (V, C)
        for start in range(0, probs.shape[0], chunk):
            stop = min(start + chunk, probs.shape[0])
            weights = np.exp(log_probs[start:stop] @ votes.T + log_coef)
            out[start:stop, k - 1] = np.einsum("mv,vm->m", weights, credit[:, gold[start:stop]])
    return out.reshape(p_count, q_count, n_max)
