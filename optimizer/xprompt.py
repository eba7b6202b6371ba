"""Borrowing strength across prompts on the same query (the ``eb-x`` estimator).

Where a query's wrong answers lie is a property of the query more than of the prompt:
prompts of one task fall into the same traps, and an easy query is easy for most of
them. So with few samples of (prompt, query), the other prompts' samples of that query
say something about it. They enter the empirical-Bayes posterior of (prompt, query)
(:func:`optimizer._bayes.eb_credit`) as a power prior: every other prompt's vote counts
``BORROW`` of a vote, and all the borrowed votes together at most ``BORROW_MAX``, so
the prompt's own samples always weigh more once it has a few. The prompts' priors are
still fitted on their own votes only; the borrowed votes only move posteriors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["BORROW", "BORROW_MAX", "borrowed"]

Array = npt.NDArray[np.float64]
BORROW = 0.25
BORROW_MAX = 2.0


def borrowed(
    counts: npt.NDArray[np.int64],
    queries: Sequence[int],
    rows: npt.NDArray[np.int64],
    weight: float | None = None,
    cap: float | None = None,
) -> Array:
    """(M, w) discounted votes of the other rows on each row's query.

    ``counts`` (M, w): votes per answer code of the rows ``rows`` (indices into
    ``queries``, the query of every (prompt, query) pair); codes are per query and
    shared by all prompts, so votes add code by code. ``weight``, ``cap``: default
    ``BORROW``, ``BORROW_MAX``.
    """
    weight = BORROW if weight is None else weight
    cap = BORROW_MAX if cap is None else cap
    query = np.asarray(queries, dtype=np.int64)[rows]
    _, slot = np.unique(query, return_inverse=True)
    slot = slot.ravel()
    totals = np.zeros((int(slot.max(initial=-1)) + 1, counts.shape[1]))
    np.add.at(totals, slot, counts)
    others = totals[slot] - counts
    mass = others.sum(axis=1, keepdims=True)
    scale = np.where(mass > 0, np.minimum(weight, cap / np.maximum(mass, 1e-12)), 0.0)
    out: Array = others * scale
    return out
