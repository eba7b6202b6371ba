from __future__ import annotations

import numpy as np

from optimizer import Pull, VoteEstimator
from optimizer.xprompt import borrowed


def test_borrowed_votes_are_the_other_prompts_on_the_same_query() -> None:
    # rows: (prompt 0, query 5), (prompt 1, query 5), (prompt 0, query 7)
    counts = np.array([[1, 2, 0], [0, 4, 1], [3, 0, 0]])
    got = borrowed(counts, [5, 5, 7], np.arange(3), weight=0.5, cap=10.0)
    np.testing.assert_allclose(got[0], [0.0, 2.0, 0.5])  # half of row 1's votes
    np.testing.assert_allclose(got[1], [0.5, 1.0, 0.0])  # half of row 0's
    np.testing.assert_allclose(got[2], [0.0, 0.0, 0.0])  # nobody else on query 7
    capped = borrowed(counts, [5, 5, 7], np.arange(3), weight=0.5, cap=1.0)
    assert capped[0].sum() == 1.0  # 5 votes at 0.5 would be 2.5: the cap holds
    np.testing.assert_allclose(capped[0], [0.0, 0.8, 0.2])


def test_other_prompts_trap_answer_lowers_a_one_sample_estimate() -> None:
    """One gold sample of prompt 0 on a query where other prompts pile onto one wrong
    answer is worth less at large N than on a query where they agree on gold."""
    est = VoteEstimator(4, 16, [0.0], borrow=True)
    base = VoteEstimator(4, 16, [0.0])
    pulls = []
    for q in range(40):
        trap = q % 2 == 1
        pulls.append(Pull(0, q, np.array([0]), np.array([1.0])))
        for p in (1, 2, 3):
            codes = np.array([1, 1, 1, 0] if trap else [0, 0, 0, 1])
            pulls.append(Pull(p, q, codes, np.ones(4)))
    est.add(pulls)
    base.add(pulls)
    # Prompt 0's curves per query: compare the pair estimates on trap and clean queries.
    est.estimate()
    base.estimate()
    rows = [i for i, p in enumerate(est._pair_prompt) if p == 0]
    trap = np.array([est._pair_query[i] % 2 == 1 for i in rows])
    with_borrow = est._curves[rows, -1]
    without = base._curves[rows, -1]
    assert with_borrow[trap].mean() < with_borrow[~trap].mean() - 0.1
    # without borrowing, one gold sample is one gold sample, wherever it was drawn
    np.testing.assert_allclose(without[trap], without[~trap])
