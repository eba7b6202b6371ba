from __future__ import annotations

import numpy as np
import pytest

from policies import DEFAULT_TIERS, Tier, majority_credit, utility


def test_default_tiers_are_the_papers_three_contexts() -> None:
    assert {t.name: t.cost_weight for t in DEFAULT_TIERS} == {
        "economy": 1.0,
        "standard": 0.2,
        "premium": 0.0,
    }


@pytest.mark.parametrize(
    ("tier", "expected"), [(t, 1.0 - t.cost_weight * 0.08) for t in DEFAULT_TIERS]
)
def test_utility_per_tier(tier: Tier, expected: float) -> None:
    # a correct vote over 8 samples costing 0.01 each
    assert utility(1.0, 8 * 0.01, tier) == pytest.approx(expected)


def test_utility_is_vectorised() -> None:
    quality = np.array([1.0, 0.5, 0.0])
    cost = np.array([0.1, 0.2, 0.3])
    np.testing.assert_allclose(utility(quality, cost, Tier("t", cost_weight=2.0)), [0.8, 0.1, -0.6])


def test_majority_credit_matches_tie_rule() -> None:
    counts = np.array(
        [
            [3, 1, 0],  # gold 0 wins
            [2, 2, 0],  # gold 0 tied with 1
            [1, 1, 1],  # three-way tie
            [0, 4, 0],  # gold loses
            [0, 0, 0],  # no votes at all
        ]
    )
    gold = np.array([0, 0, 2, 0, 0])
    np.testing.assert_allclose(majority_credit(counts, gold), [1.0, 0.5, 1 / 3, 0.0, 0.0])


def test_majority_credit_broadcasts_over_blocks() -> None:
    counts = np.zeros((4, 6, 5), dtype=np.int64)  # (queries, blocks, categories)
    counts[..., 2] = 1
    gold = np.array([2, 2, 0, 1])[:, None]
    credit = majority_credit(counts, gold)
    assert credit.shape == (4, 6)
    np.testing.assert_allclose(credit[:2], 1.0)
    np.testing.assert_allclose(credit[2:], 0.0)


def test_tier_caps_n() -> None:
    tier = Tier("capped", cost_weight=0.5, max_n=4, max_cost=0.05)
    assert tier.cap_n(16) == 4
    assert tier.cap_n(16, cost_per_sample=0.02) == 2
    assert tier.cap_n(16, cost_per_sample=1.0) == 1  # never below one sample
    assert Tier("open").cap_n(16, cost_per_sample=1.0) == 16
