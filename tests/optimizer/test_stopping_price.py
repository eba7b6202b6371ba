"""The optimizer prices N by the samples a tier's stopping rule is expected to draw."""

from __future__ import annotations

import numpy as np
import pytest

from optimizer import Pull, ReplaySampler, VoteEstimator, optimize, replay_task
from optimizer._bayes import _grid, samples_table
from policies.aggregate import vote_decided
from policies.stopping import StopRule
from policies.tiers import Tier

from .conftest import random_table

EXACT = StopRule(kind="exact")


def _simulated_stop(theta: np.ndarray, n: int, runs: int, rng: np.random.Generator) -> float:
    """Mean samples exact stopping draws, one at a time, under θ = (g, w1, w2, one-offs)."""
    total = 0
    for _ in range(runs):
        counts: dict[object, int] = {}
        for t in range(1, n + 1):
            pick = int(rng.choice(4, p=theta))
            key: object = pick if pick < 3 else ("one-off", t)
            counts[key] = counts.get(key, 0) + 1
            if t == n or vote_decided({str(k): v for k, v in counts.items()}, n - t):
                total += t
                break
    return total / runs


def test_exact_samples_table_matches_closed_forms_and_simulation() -> None:
    grid = _grid()
    table = samples_table(16, stops_early=True)
    sizes = np.arange(1, 17)
    np.testing.assert_array_equal(samples_table(16, stops_early=False)[0], sizes)
    # A prompt that always gives the same answer stops once that answer has a majority.
    certain = int(np.flatnonzero(grid[:, 0] == 1.0)[0])
    np.testing.assert_allclose(table[certain], sizes // 2 + 1)
    # Only one-off answers: never decided, every sample is drawn.
    scattered = int(np.flatnonzero(grid[:, 3] == 1.0)[0])
    np.testing.assert_allclose(table[scattered], sizes)
    rng = np.random.default_rng(3)
    for j in rng.choice(len(grid), size=3, replace=False):
        theta = grid[j] / grid[j].sum()
        for n in (5, 16):
            want = _simulated_stop(theta, n, 1200, rng)  # standard error ≤ 0.12
            assert table[j, n - 1] == pytest.approx(want, abs=0.4), (grid[j], n)
    assert np.all(table <= sizes + 1e-9)
    assert np.all(np.diff(table, axis=1) >= -1e-9)


def test_a_tier_that_stops_early_is_priced_by_its_expected_samples() -> None:
    rng = np.random.default_rng(0)
    probs = np.array([0.9, 0.05, 0.05])
    pulls = [Pull(0, q, rng.choice(3, size=4, p=probs), np.full(4, 0.01)) for q in range(200)]
    est = VoteEstimator(1, 16, [1.0, 1.0], [StopRule(), EXACT], symmetric=True)
    est.add(pulls)
    estimate = est.estimate()
    full, exact = estimate.samples[0, 0], estimate.samples[1, 0]
    np.testing.assert_array_equal(full, np.arange(1, 17))
    # A vote that agrees 90% of the time stops just past a majority.
    assert exact[15] < 11
    assert exact[15] > 8.5
    assert np.all(exact <= full + 1e-9)
    np.testing.assert_allclose(
        estimate.utility[1, 0], estimate.quality[1, 0] - 0.01 * exact, rtol=1e-9
    )
    np.testing.assert_allclose(estimate.quality[0], estimate.quality[1])


async def test_the_policy_records_expected_samples_and_their_cost() -> None:
    table = random_table(np.random.default_rng(4), prompts=4, queries=120, categories=3)
    tiers = (Tier("economy", cost_weight=1.0), Tier("stopping", cost_weight=1.0, stop="exact"))
    task = replay_task(table, tiers=tiers, n_max=16)
    rng = np.random.default_rng(1)
    result = await optimize(task, ReplaySampler(table, rng), 1500, rng)
    full, stopping = result.policy.tiers["economy"], result.policy.tiers["stopping"]
    assert full.stop == "full"
    assert full.expected_samples == full.n
    assert stopping.stop == "exact"
    assert stopping.expected_samples is not None
    assert stopping.expected_samples <= stopping.n
    if stopping.n > 2:
        assert stopping.expected_samples < stopping.n
    cost = table.cost_per_prompt[int(stopping.prompt.id)]
    assert stopping.expected_cost == pytest.approx(cost * stopping.expected_samples, rel=1e-3)
