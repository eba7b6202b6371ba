"""The synthetic tables have the structure the demo relies on, checked exactly."""

from __future__ import annotations

import numpy as np
import pytest

from iapo.simulator import (
    REWARD_TIERS,
    expected_max_standard_normal,
    majority_accuracy,
    majority_credit_exact,
    synthetic_majority_table,
    synthetic_reward_table,
)
from policies.tiers import DEFAULT_TIERS
from policies.utility import majority_credit

N_MAX = 32


def _best_arms(utility: np.ndarray) -> tuple[int, int]:
    prompt, n = np.unravel_index(int(np.argmax(utility)), utility.shape)
    return int(prompt), int(n) + 1


def test_exact_majority_credit_matches_monte_carlo(rng: np.random.Generator, seed: int) -> None:
    probs = rng.dirichlet(np.full(5, 0.7), size=(1, 6))
    gold = rng.integers(0, 5, 6)
    exact = majority_credit_exact(probs, gold, 9)[0]
    draws = 20_000
    for n in (1, 2, 5, 9):
        cats = np.stack([rng.choice(5, size=(draws, n), p=row) for row in probs[0]])
        counts = (cats[..., None] == np.arange(5)).sum(axis=2)
        estimate = majority_credit(counts, gold[:, None]).mean(axis=1)
        # 20k draws: standard error ≤ 0.0036; 5 sigma
        assert np.abs(estimate - exact[:, n - 1]).max() < 0.018, f"seed {seed}, N={n}"


def test_expected_max_of_normals_matches_known_values() -> None:
    np.testing.assert_allclose(
        expected_max_standard_normal(5), [0.0, 0.5642, 0.8463, 1.0294, 1.1630], atol=1e-4
    )


@pytest.mark.parametrize("split", ["train", "test"])
def test_majority_tiers_pick_different_arms_and_beat_prompt_only(split: str) -> None:
    table = synthetic_majority_table()
    probs, gold = table.split(split)
    assert probs is not None
    assert gold is not None
    accuracy = majority_accuracy(probs, gold, N_MAX)  # (P, N)
    n = np.arange(1, N_MAX + 1)
    prompt_only = int(np.argmax(accuracy[:, 0]))
    chosen = {}
    for tier in DEFAULT_TIERS:
        utility = accuracy - tier.cost_weight * table.cost_per_prompt[:, None] * n
        chosen[tier.name] = _best_arms(utility)
        best = utility.max()
        # the prompt-only pick served at N=1 loses utility in every tier
        assert best > utility[prompt_only, 0] + 0.02, (tier.name, chosen)
    # a deceiving prompt: best at N=1, not the premium (large-N) choice
    assert chosen["premium"][0] != prompt_only
    ns = [chosen[name][1] for name in ("economy", "standard", "premium")]
    assert ns == sorted(ns), chosen
    assert len(set(ns)) == 3, chosen
    assert accuracy[chosen["premium"][0], -1] > accuracy[prompt_only, -1] + 0.05


def test_costs_differ_about_threefold() -> None:
    cost = synthetic_majority_table().cost_per_prompt
    assert 2.5 <= cost.max() / cost.min() <= 4.0


def test_reward_tiers_trade_objectives_and_beat_prompt_only() -> None:
    table = synthetic_reward_table()
    n = np.arange(1, N_MAX + 1)
    chosen = {}
    for tier in REWARD_TIERS:
        best_of = table.expected_best("test", tier.objective_weights, N_MAX)
        utility = best_of - tier.cost_weight * table.cost_per_prompt[:, None] * n
        chosen[tier.name] = _best_arms(utility)
        prompt_only = int(np.argmax(best_of[:, 0]))
        assert utility.max() > utility[prompt_only, 0] + 0.03, (tier.name, chosen)
        assert chosen[tier.name][0] != prompt_only, tier.name
    # helpfulness and harmlessness pick different prompts
    assert chosen["helpful"][0] != chosen["safe"][0], chosen
    assert chosen["economy"][1] <= min(chosen["helpful"][1], chosen["safe"][1]), chosen


def test_tables_are_a_function_of_the_seed() -> None:
    a, b = synthetic_majority_table(11), synthetic_majority_table(11)
    np.testing.assert_array_equal(a.cat_probs, b.cat_probs)
    assert not np.array_equal(a.cat_probs, synthetic_majority_table(12).cat_probs)
    r = synthetic_reward_table(11)
    assert r.draw(2, "train", 5, 99) == synthetic_reward_table(11).draw(2, "train", 5, 99)
    assert r.draw(2, "train", 5, 99) != r.draw(2, "train", 5, 100)
