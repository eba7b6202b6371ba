"""Utility of an aggregated answer under a tier: quality minus λ·cost.

Majority vote: quality is 1 if the voted answer is correct, with ties broken uniformly
at random, so its expectation is 1/|tied| when the gold answer is among the tied.
Best-of-N: quality is max over the N samples of Σ_k w_k·r_k. Cost is the cost of all
N samples. Every function works on numpy arrays as well as on scalars, so the
optimizer's vectorised bookkeeping and the proxy's single requests share one definition.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import numpy.typing as npt

from policies.tiers import Tier

__all__ = ["majority_credit", "utility"]

Value = TypeVar("Value", float, npt.NDArray[np.float64])


def majority_credit(
    counts: npt.NDArray[np.integer] | npt.NDArray[np.floating], gold: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Expected correctness of a majority vote with uniform random tie-breaking.

    ``counts``: (..., C) votes per answer category; ``gold``: (...) the gold category
    (an int array broadcastable to ``counts.shape[:-1]``). A block with no votes earns 0.
    Returns (...) floats in [0, 1].
    """
    votes = np.asarray(counts)
    top = votes.max(axis=-1, keepdims=True)
    tied = (votes == top) & (top > 0)
    n_tied = tied.sum(axis=-1)
    gold_index = np.broadcast_to(np.asarray(gold), votes.shape[:-1])[..., None]
    gold_tied = np.take_along_axis(tied, gold_index, axis=-1)[..., 0]
    return np.where(n_tied > 0, gold_tied / np.maximum(n_tied, 1), 0.0)


def utility(quality: Value, cost: Value, tier: Tier) -> Value:
    """``quality − tier.cost_weight · cost``; cost is that of all the samples drawn."""
    return quality - tier.cost_weight * cost
