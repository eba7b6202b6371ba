"""The threshold rule's exact value on empirical distributions, and the optimizer's choice
of a tier's threshold and cap from the rewards it drew."""

from __future__ import annotations

import numpy as np
import pytest

from optimizer import BestOfNTable, ReplaySampler, optimize, replay_task
from optimizer.sequential import KERNEL_POINTS, choose_threshold, rule_curves, smoothed
from policies import Tier, decode_policy, encode_policy, threshold_waves


def simulate(row: np.ndarray, threshold: float, n: int, rng: np.random.Generator) -> tuple:
    """Monte Carlo (mean best at stop, mean samples) of the rule as the proxy runs it."""
    requests = 40_000
    draws = rng.choice(row, size=(requests, n))
    best = np.empty(requests)
    drawn = np.empty(requests)
    for r in range(requests):
        start = 0
        for w in threshold_waves(n):
            start += w
            if draws[r, start - w : start].max() >= threshold:
                break
        best[r], drawn[r] = draws[r, :start].max(), start
    return best.mean(), drawn.mean()


def test_rule_curves_match_a_simulation_of_the_proxys_waves(seed: int) -> None:
    rng = np.random.default_rng(seed)
    row = np.array([0.1, 0.4, 0.4, 0.7, 0.9])  # a tie: the CDF steps by two samples
    thresholds, caps = [0.4, 0.8], [1, 4, 7]
    quality, samples = rule_curves([row], thresholds, caps)
    for c, t in enumerate(thresholds):
        for k, n in enumerate(caps):
            best, drawn = simulate(row, t, n, rng)
            assert quality[0, c, k] == pytest.approx(best, abs=0.005), f"seed {seed}, {t}, {n}"
            assert samples[0, c, k] == pytest.approx(drawn, abs=0.03), f"seed {seed}, {t}, {n}"


def test_rule_curves_limits_are_one_sample_and_fixed_n() -> None:
    row = np.array([0.2, 0.5, 0.9])
    quality, samples = rule_curves([row, row + 1.0], [0.0, 5.0], [1, 3])
    # t at or below every reward: the first sample stops.
    np.testing.assert_allclose(quality[:, 0, :], [[0.5333333, 0.5333333], [1.5333333] * 2])
    np.testing.assert_allclose(samples[:, 0, :], 1.0)
    # t above every reward: never stops, E[max of N] of the empirical distribution.
    e_max_3 = sum(v * ((i + 1) ** 3 - i**3) / 27 for i, v in enumerate(row))
    np.testing.assert_allclose(quality[0, 1], [row.mean(), e_max_3])
    np.testing.assert_allclose(samples[0, 1], [1.0, 3.0])


def test_a_threshold_beats_fixed_n_on_iid_rewards_and_reaches_the_policy_bounds(
    rng: np.random.Generator,
) -> None:
    rows = [rng.random(40) for _ in range(30)]
    choice = choose_threshold(rows, cost_weight=1.0, cost_per_sample=0.01, n=8, n_cap=32)
    assert choice.stops
    assert choice.utility > choice.fixed_utility
    assert choice.utility >= choice.pooled_utility
    assert 8 <= choice.n <= 32
    assert 1.0 <= choice.expected_samples < choice.n
    # It stops where the closed form says, give or take the waves and the cap.
    assert choice.threshold == pytest.approx(1 - np.sqrt(2 * 0.01), abs=0.08)


def test_with_free_samples_the_rule_never_stops_early(rng: np.random.Generator) -> None:
    rows = [rng.random(20) for _ in range(10)]
    choice = choose_threshold(rows, cost_weight=0.0, cost_per_sample=0.01, n=8, n_cap=8)
    assert not choice.stops
    assert choice.threshold > max(float(r.max()) for r in rows)
    assert choice.n == 8
    assert choice.expected_samples == 8.0
    assert choice.utility == choice.fixed_utility


def test_on_differing_queries_the_chosen_threshold_beats_the_pooled_closed_form(
    rng: np.random.Generator,
) -> None:
    # A quarter of the queries are easy (1 + U(0, 1)), the rest hard (U(0, 1)). Pooled,
    # the closed form (about 1.37) waits for a reward only easy queries give, so every
    # hard request runs to the cap; one the hard ones reach (about 0.65) pays more.
    rows = [rng.random(40) + (1.0 if q % 4 == 0 else 0.0) for q in range(40)]
    choice = choose_threshold(rows, cost_weight=1.0, cost_per_sample=0.05, n=8, n_cap=16)
    assert choice.stops
    assert choice.pooled_threshold > 1.2
    assert choice.threshold < 0.8
    assert choice.utility > choice.pooled_utility + 0.05
    assert choice.pooled_utility > choice.fixed_utility


def test_queries_with_few_samples_are_left_out_unless_all_are_few() -> None:
    rich = [np.linspace(0.0, 1.0, 8)] * 3
    choice = choose_threshold([*rich, np.array([5.0])], 1.0, 0.01, 2, 8)
    assert choice.queries == 3
    assert choice.threshold <= 1.0
    alone = choose_threshold([np.array([0.3]), np.array([0.6])], 1.0, 0.01, 2, 8)
    assert alone.queries == 2
    nothing = choose_threshold([], 1.0, 0.01, 2, 8)
    assert (nothing.queries, nothing.stops, nothing.expected_samples) == (0, False, 2.0)


async def test_optimize_writes_a_threshold_tiers_rule_into_the_policy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    prompts, queries = 3, 30
    table = BestOfNTable(
        rng.uniform(size=(prompts, queries, 6, 2)),
        rng.dirichlet(np.ones(6), size=(prompts, queries)),
        ("helpfulness", "harmlessness"),
        np.full(prompts, 0.01),
    )
    tiers = (
        Tier("economy", cost_weight=2.0, stop="threshold"),
        Tier("premium", cost_weight=0.0, stop="threshold"),
        Tier("standard", cost_weight=0.5),
    )
    task = replay_task(table, tiers=tiers, n_max=16)
    result = await optimize(task, ReplaySampler(table, rng), 1500, rng)
    economy, premium = result.policy.tiers["economy"], result.policy.tiers["premium"]
    report = result.tiers["economy"].threshold
    assert report is not None
    assert report.queries > 0
    assert economy.stop == "threshold"
    assert economy.threshold == report.threshold
    assert economy.expected_samples is not None
    assert economy.expected_samples <= economy.n
    assert economy.n >= result.tiers["economy"].chosen.n, f"seed {seed}"
    assert economy.expected_cost == pytest.approx(0.01 * economy.expected_samples)
    if report.stops:
        assert economy.expected_utility > result.tiers["economy"].chosen.utility
    # Free samples: stopping early only pays through a larger cap; else it is fixed N,
    # written as a threshold above every score the table has.
    free = result.tiers["premium"].threshold
    assert free is not None
    assert premium.stop == "threshold"
    assert premium.threshold is not None
    if free.stops:
        assert premium.n > result.tiers["premium"].chosen.n, f"seed {seed}"
    else:
        assert premium.threshold > table.scores(None).max()
        assert premium.expected_samples == premium.n == result.tiers["premium"].chosen.n
    standard = result.policy.tiers["standard"]
    assert (standard.stop, standard.threshold, result.tiers["standard"].threshold) == (
        "full",
        None,
        None,
    )
    assert decode_policy(encode_policy(result.policy)) == result.policy


def test_continuous_rewards_are_smoothed_keeping_mean_and_variance(
    rng: np.random.Generator,
) -> None:
    row = rng.normal(0.5, 0.1, 30)
    smooth = smoothed(row)
    assert smooth.size == 30 * KERNEL_POINTS
    assert smooth.mean() == pytest.approx(row.mean(), abs=1e-12)
    # The kernel's 8 atoms have a little less variance than a Gaussian: close, not exact.
    assert smooth.std() == pytest.approx(row.std(), rel=0.03)
    assert smooth.max() > row.max()  # E[max of N] is no longer capped at the sample max
    discrete = np.array([0.0, 1.0, 1.0, 0.5])
    assert smoothed(discrete) is discrete
