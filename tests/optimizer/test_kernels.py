from __future__ import annotations

import numpy as np
import pytest

from optimizer._kernels import block_credit
from optimizer.exact import majority_credit_exact
from policies.utility import majority_credit


def test_block_credit_splits_ties_and_ignores_unanswered() -> None:
    codes = np.array([[0, 1, 0, 0, 1, 1, -1, 2]])
    # k=2 blocks: [0,1] tie -> 1/2; [0,0] -> 1; [1,1] -> 0; [-1,2] -> 0
    assert block_credit(codes, 2, 3).tolist() == [[0.5, 1.0, 0.0, 0.0]]
    assert block_credit(codes, 8, 3).tolist() == [[0.5]]  # 0 and 1 have three votes each
    assert block_credit(codes, 3, 3).tolist() == [[1.0, 0.0]]


def test_exact_majority_accuracy_matches_monte_carlo(seed: int) -> None:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(3), size=(1, 2))
    answers = np.array([0, 2])
    acc = majority_credit_exact(probs, answers, 5)
    for q in range(2):
        for k in (1, 4, 5):
            draws = rng.multinomial(k, probs[0, q], size=100_000)
            mc = majority_credit(draws, answers[q]).mean()
            assert acc[0, q, k - 1] == pytest.approx(mc, abs=0.01), f"seed={seed}"
    assert acc[0, :, 0] == pytest.approx(probs[0, [0, 1], answers])


def test_credit_table_is_exact_for_grid_points(seed: int) -> None:
    from optimizer._bayes import _credit_table, _grid

    grid, table = _grid(), _credit_table(7)
    rng = np.random.default_rng(seed)
    for j in rng.choice(len(grid), 5, replace=False):
        g, w1, w2, r = grid[j]
        draws = rng.choice(4, p=[g, w1, w2, r], size=(40_000, 7))
        for k in (1, 4, 7):
            counts = np.stack([(draws[:, :k] == c).sum(axis=1) for c in range(3)], axis=1)
            one_offs = (draws[:, :k] == 3).sum(axis=1)
            top = np.maximum(counts.max(axis=1), (one_offs > 0).astype(int))
            tied = (counts == top[:, None]).sum(axis=1) + np.where(top == 1, one_offs, 0)
            mc = np.where(counts[:, 0] == top, 1 / np.maximum(tied, 1), 0.0).mean()
            assert table[j, k - 1] == pytest.approx(mc, abs=0.015), f"θ={grid[j]} k={k} seed={seed}"


def test_empirical_bayes_extrapolates_past_the_samples_seen(seed: int) -> None:
    from math import comb

    from optimizer._bayes import eb_credit

    rng = np.random.default_rng(seed)
    # 300 queries, 8 samples each: 70% answered right 90% of the time, the rest right
    # 30% of the time with one dominant wrong answer. The truth at N=31 (no ties) is
    # P(Binomial(31, p) ≥ 16) per query.
    right = rng.random(300) < 0.7
    p_gold = np.where(right, 0.9, 0.3)
    truth = np.array(
        [sum(comb(31, i) * p**i * (1 - p) ** (31 - i) for i in range(16, 32)) for p in p_gold]
    )
    gold = rng.binomial(8, p_gold)
    counts = np.stack([gold, 8 - gold], axis=1)
    curve, _ = eb_credit(counts, np.zeros(300, dtype=np.int64), 31)
    assert curve[:, 0].mean() == pytest.approx(p_gold.mean(), abs=0.03), f"seed {seed}"
    assert curve[:, 30].mean() == pytest.approx(truth.mean(), abs=0.03), f"seed {seed}"
    # A plug-in estimate (each query's 8-sample frequencies taken as its truth)
    # regresses toward a coin flip past the samples it has seen.
    from optimizer.exact import majority_credit_exact

    freq = np.stack([gold, 8 - gold], axis=1)[None] / 8.0
    plug_in = majority_credit_exact(freq, np.zeros(300, dtype=np.int64), 31)[0]
    assert abs(curve[:, 30].mean() - truth.mean()) < abs(plug_in[:, 30].mean() - truth.mean())
