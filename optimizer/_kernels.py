"""Numeric kernels of the estimators: majority-vote credit of prefixes, U-statistics.

Short math names inside: ``m`` samples on a query, ``k`` block size, ``w`` answer codes
(code 0 is the gold answer), ``s`` Monte Carlo sequences per query.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["block_credit", "max_ustat", "prefix_credit"]


def _credit(
    counts: npt.NDArray[np.int32], singletons: npt.NDArray[np.int32]
) -> npt.NDArray[np.float64]:
    """Majority credit of gold (code 0) given votes ``counts`` (..., w) and ``singletons`` (...)

    distinct answers seen once each (they tie with every other answer seen once).
    """
    top = np.maximum(counts.max(axis=-1), (singletons > 0).astype(counts.dtype))
    tied = ((counts == top[..., None]) & (top[..., None] > 0)).sum(axis=-1)
    tied = tied + np.where(top == 1, singletons, 0)
    gold = (counts[..., 0] == top) & (top > 0)
    return np.where(gold, 1.0 / np.maximum(tied, 1), 0.0)


def block_credit(codes: npt.NDArray[np.int64], k: int, width: int) -> npt.NDArray[np.float64]:
    """Majority credit of disjoint blocks of size ``k``.

    ``codes``: (M, n) answer codes (-1: no vote); returns (M, n // k) credits.
    """
    m_rows, n = codes.shape
    blocks = n // k
    onehot = np.zeros((m_rows, blocks * k, width), dtype=np.int32)
    sub = codes[:, : blocks * k]
    rows, cols = np.nonzero(sub >= 0)
    onehot[rows, cols, sub[rows, cols]] = 1
    counts = onehot.reshape(m_rows, blocks, k, width).sum(axis=2)
    return _credit(counts, np.zeros(counts.shape[:-1], dtype=np.int32))


def prefix_credit(
    counts: npt.NDArray[np.int64],
    none: npt.NDArray[np.int64],
    k_max: int,
    rng: np.random.Generator,
    *,
    sequences: int = 32,
    alpha: float = 0.5,
) -> npt.NDArray[np.float64]:
    """Estimated majority-vote credit at every N = 1..k_max for M queries.

    ``counts`` (M, w): observed votes per answer code (0 = gold); ``none`` (M,): samples
    with no answer. Each of ``sequences`` Monte Carlo sequences first draws the observed
    samples without replacement (so for N ≤ m the mean credit of the first N is the
    U-statistic, unbiased for the true N-sample majority), then continues with a Pólya
    urn over what has been drawn plus mass ``alpha`` for a new, distinct answer (a
    Dirichlet-process posterior predictive) to extrapolate past the m samples observed.
    Returns (M, k_max).
    """
    m_rows, width = counts.shape
    m = (counts.sum(axis=1) + none).astype(np.int64)
    rows = m_rows * sequences
    observed = np.repeat(np.concatenate([counts, none[:, None]], axis=1), sequences, axis=0)
    remaining = observed.astype(np.float64)
    m_rep = np.repeat(m, sequences)
    drawn = np.zeros((rows, width + 1), dtype=np.int32)  # votes per code, then "no vote"
    singletons = np.zeros(rows, dtype=np.int32)
    new_slot = np.zeros((rows, 1))
    out = np.empty((rows, k_max))
    uniforms = rng.random((k_max, rows))
    all_rows = np.arange(rows)
    for j in range(k_max):
        from_sample = j < m_rep
        # Without replacement while observed samples remain, then the Pólya urn.
        weights = np.where(from_sample[:, None], remaining, drawn.astype(np.float64))
        weights = np.concatenate(
            [weights, np.where(from_sample, 0.0, alpha)[:, None] + new_slot], 1
        )
        cum = np.cumsum(weights, axis=1)
        pick = (cum < (uniforms[j] * cum[:, -1])[:, None]).sum(axis=1)
        pick = np.minimum(pick, width + 1)
        is_new = pick == width + 1
        singletons += is_new
        keep = ~is_new
        drawn[all_rows[keep], pick[keep]] += 1
        taken = from_sample & keep
        remaining[all_rows[taken], pick[taken]] -= 1
        out[:, j] = _credit(drawn[:, :width], singletons)
    curve: npt.NDArray[np.float64] = out.reshape(m_rows, sequences, k_max).mean(axis=1)
    # N = 1 is known exactly: the share of samples that are gold.
    has = m > 0
    curve[has, 0] = counts[has, 0] / m[has]
    return curve


def max_ustat(scores: npt.NDArray[np.float64], k_max: int) -> npt.NDArray[np.float64]:
    """E[max of a random N-subset] of ``scores`` (m,) for N = 1..k_max (exact U-statistic).

    Past N = m the max of all m is used (a conservative extrapolation). NaN scores
    (unscored samples) count as the worst score.
    """
    x = np.sort(np.where(np.isfinite(scores), scores, -np.inf))
    m = x.size
    out = np.empty(k_max)
    if m == 0:
        out[:] = np.nan
        return out
    finite_min = x[np.isfinite(x)].min() if np.isfinite(x).any() else 0.0
    x = np.where(np.isfinite(x), x, finite_min)
    i = np.arange(1, m + 1)
    for k in range(1, min(m, k_max) + 1):
        # P(the i-th smallest is the max of a k-subset) = C(i-1, k-1) / C(m, k)
        log_w = _log_comb(i - 1, k - 1) - _log_comb(np.array([m]), k)[0]
        w = np.where(i >= k, np.exp(log_w), 0.0)
        out[k - 1] = float(w @ x)
    out[min(m, k_max) :] = x[-1]
    return out


def _log_comb(n: npt.NDArray[np.int64], k: int) -> npt.NDArray[np.float64]:
    from math import lgamma

    lg = np.vectorize(lgamma, otypes=[np.float64])
    valid = n >= k
    safe = np.where(valid, n, k)
    return np.where(valid, lg(safe + 1) - lg(k + 1) - lg(safe - k + 1), -np.inf)
