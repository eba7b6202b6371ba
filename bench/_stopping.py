"""Exact stopping's true expected samples on a recorded table, for the cost benches.

``exact_stop_samples(cat_probs, n_max)`` is E[τ_N] per (prompt, query, N): the samples
a vote drawn one at a time needs under exact early stopping, estimated from ``draws``
simulated answer sequences per pair (common random numbers across N). The stopping time
uses the same fact as ``optimizer._bayes.samples_table``: h_t = gap_t + t never
decreases, so the vote is still running after t < N samples exactly when h_t ≤ N.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import numpy.typing as npt

CACHE = Path(__file__).resolve().parent / ".cache"
Array = npt.NDArray[np.float64]


def exact_stop_samples(cat_probs: Array, n_max: int, draws: int = 1000, seed: int = 5) -> Array:
    """(P, Q, n_max) expected samples under exact stopping, cached on disk by content."""
    key = hashlib.sha256(cat_probs.tobytes()).hexdigest()[:16]
    path = CACHE / f"exact-stop-{key}-{n_max}-{draws}-{seed}.npy"
    if path.exists():
        return np.load(path)
    rng = np.random.default_rng(seed)
    prompts, queries, categories = cat_probs.shape
    out = np.empty((prompts, queries, n_max))
    sizes = np.arange(1, n_max + 1)
    for p in range(prompts):
        probs = cat_probs[p] / cat_probs[p].sum(axis=1, keepdims=True)
        cumulative = np.cumsum(probs, axis=1)
        u = rng.random((queries, draws, n_max))
        picks = (u[..., None] > cumulative[:, None, None, :]).sum(axis=-1)  # (Q, D, T)
        picks = np.minimum(picks, categories - 1)
        counts = np.cumsum(np.eye(categories, dtype=np.int16)[picks], axis=2)  # (Q, D, T, C)
        top2 = -np.sort(-counts, axis=-1)[..., :2]
        h = (top2[..., 0] - top2[..., 1]).astype(np.int64) + sizes  # (Q, D, T), t = 1..n_max
        # #{t : h_t ≤ N} for every N from a histogram of h per sequence; τ_N = min(N, 1 + it)
        # (h_t ≥ t, so only t ≤ N can count, and t = N counts only when every t does).
        rows = queries * draws
        offset = (n_max + 2) * np.arange(rows)[:, None]
        bins = np.minimum(h, n_max + 1).reshape(rows, n_max) + offset
        hist = np.bincount(bins.ravel(), minlength=rows * (n_max + 2)).reshape(rows, n_max + 2)
        below = np.cumsum(hist, axis=1)[:, 1 : n_max + 1]  # (rows, N): #{t : h_t ≤ N}
        tau = np.minimum(sizes, 1 + below).reshape(queries, draws, n_max)
        out[p] = tau.mean(axis=1)
    CACHE.mkdir(exist_ok=True)
    np.save(path, out)
    return out
