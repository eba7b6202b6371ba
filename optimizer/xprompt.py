"""Borrowing strength across prompts on the same query (the ``eb-x`` estimator).

Where a query's wrong answers lie is a property of the query more than of the prompt:
prompts of one task fall into the same traps, and an easy query is easy for most of
them. So with few samples of (prompt, query), the other prompts' samples of that query
say something about it. They enter the empirical-Bayes posterior of (prompt, query)
(:func:`optimizer._bayes.eb_credit`) as a power prior: every other prompt's vote counts
``BORROW`` of a vote, and all the borrowed votes together at most ``BORROW_MAX``, so
the prompt's own samples always weigh more once it has a few. The prompts' priors are
still fitted on their own votes only; the borrowed votes only move posteriors.

``sh-xprompt`` pairs this with pulls of one sample: every active prompt of a round on
the same queries, as many as the round's share covers (the finalists of a halving
are compared on several times more shared queries than with ``sh-pooled``'s pulls of
up to 8). Measured on MATH (``bench/optimizer.py``, tuned on seeds 0-49; fresh seeds
100-199): 98.6 / 98.9 / 99.2 / 99.6% at B = 500 / 1000 / 3000 / 10000 against
98.0 / 98.3 / 98.9 / 99.2% for ``sh-pooled``. On seeds 0-49 at B = 1000 / 3000, pulls
of one sample without borrowing got 99.3 / 98.3%, with it (``BORROW`` 0.25, at most 2
votes) 99.1 / 99.0%, ``sh-pooled`` 98.0 / 98.5%: small pulls carry the small budgets,
borrowing the larger ones; heavier borrowing (0.5-1 a vote, up to 4) was worse at
B = 3000. The limit: one sample per query shows little of how concentrated a prompt's
wrong answers are, so a prompt that only wins at large N needs a larger budget to be
found than with ``sh-pooled`` (``tests/optimizer/test_xprompt.py``: a shared-trap table
that ``sh-xprompt`` gets wrong in about a third of the seeds at B = 2000, and ``sh-pooled``
in one in ten; both always right at B = 4000).
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
