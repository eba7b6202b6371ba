"""Numeric kernels of the block estimator: majority-vote credit of disjoint blocks.

Short math names inside: ``m`` samples on a query, ``k`` block size, ``w`` answer codes
(code 0 is the gold answer), ``s`` Monte Carlo sequences per query.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["block_credit"]


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
