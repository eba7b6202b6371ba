"""The Best-of-N estimator against exact values: order statistics, lift, extrapolation."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from iapo.simulator.exact import expected_max_standard_normal
from optimizer import Pull, RewardEstimator
from optimizer._reward import extend_lift, max_ustat_rows

K_MAX = 32


def exact_categorical(values: np.ndarray, probs: np.ndarray, n_max: int) -> np.ndarray:
    """E[max of N draws] of a categorical over ``values``, N = 1..n_max."""
    order = np.argsort(values)
    x, cdf = values[order], np.cumsum(probs[order])
    below = np.concatenate([[0.0], cdf[:-1]])
    n = np.arange(1, n_max + 1)[:, None]
    return (x[None] * (cdf[None] ** n - below[None] ** n)).sum(axis=1)


def test_max_ustat_matches_brute_force_and_scores_nan_as_the_worst() -> None:
    scores = np.array([[0.3, 0.9, 0.1, 0.5, 0.7], [1.0, np.nan, 2.0, 0.0, 3.0]])
    out = max_ustat_rows(scores, 7)
    assert out.shape == (2, 5)
    filled = np.array([[0.3, 0.9, 0.1, 0.5, 0.7], [1.0, 0.0, 2.0, 0.0, 3.0]])
    for r in range(2):
        for k in range(1, 6):
            brute = np.mean([filled[r, list(c)].max() for c in combinations(range(5), k)])
            assert out[r, k - 1] == pytest.approx(brute)


def test_lift_extension_follows_a_normal_and_a_saturating_reward() -> None:
    normal = expected_max_standard_normal(K_MAX)
    values, probs = np.array([0.0, 0.5, 1.0]), np.array([0.5, 0.4, 0.1])
    saturating = exact_categorical(values, probs, K_MAX)
    saturating = saturating - saturating[0]
    for top in (4, 8, 16):
        for truth, tolerance in ((normal, 0.03), (saturating, 0.2)):
            measured = np.where(np.arange(K_MAX) < top, truth, 0.0)[None]
            got = extend_lift(measured, np.array([top]))[0]
            np.testing.assert_array_equal(got[:top], truth[:top])
            assert abs(got[-1] - truth[-1]) <= tolerance * truth[-1], (top, got[-1], truth[-1])
            assert np.all(np.diff(got) >= -1e-12)  # E[max of N] never falls with N
    # Nothing past N=1 measured: no lift is invented.
    assert extend_lift(np.zeros((1, K_MAX)), np.array([1])).max() == 0.0


def _pulls(rng: np.random.Generator, draw, prompts: int, queries: int, wide: int) -> list[Pull]:
    """Every prompt on every query: one pull of K_MAX on the first ``wide`` queries,
    pulls of 2 on the rest (the default design's shape)."""
    pulls = []
    for p in range(prompts):
        for q in range(queries):
            n = K_MAX if q < wide else 2
            scores = draw(p, q, n)[None]  # one tier
            pulls.append(Pull(p, q, np.zeros(n, dtype=np.int64), np.ones(n), scores))
    return pulls


def test_reward_estimator_matches_exact_gaussian_best_of_n(seed: int) -> None:
    rng = np.random.default_rng(seed)
    queries = 300
    means = rng.normal(0.5, 0.1, (2, queries))
    spread = np.array([0.05, 0.25])  # prompt 1: lower mean, far better at large N
    means[1] -= 0.1

    def draw(p: int, q: int, n: int) -> np.ndarray:
        return means[p, q] + spread[p] * rng.standard_normal(n)

    est = RewardEstimator(2, K_MAX, [0.0])
    est.add(_pulls(rng, draw, 2, queries, wide=20))
    got = est.estimate()
    quality, stderr = got.quality[0], got.stderr[0]
    truth = means.mean(axis=1)[:, None] + spread[:, None] * expected_max_standard_normal(K_MAX)
    # within 4 of its own standard errors everywhere (and those are small)
    assert np.all(np.abs(quality - truth) <= 4 * stderr), f"seed {seed}"
    assert stderr.max() < 0.04
    assert quality[0, 0] > quality[1, 0]  # the N=1 winner ...
    assert quality[1, -1] > quality[0, -1] + 0.2  # ... loses at N=32


def test_reward_estimator_matches_exact_categorical_best_of_n(seed: int) -> None:
    rng = np.random.default_rng(seed)
    queries, outcomes = 300, 5
    values = rng.uniform(0.0, 1.0, (1, queries, outcomes))
    probs = rng.dirichlet(np.ones(outcomes), (1, queries))

    def draw(p: int, q: int, n: int) -> np.ndarray:
        return values[p, q, rng.choice(outcomes, size=n, p=probs[p, q])]

    est = RewardEstimator(1, K_MAX, [0.0])
    est.add(_pulls(rng, draw, 1, queries, wide=25))
    got = est.estimate()
    quality, stderr = got.quality[0, 0], got.stderr[0, 0]
    truth = np.mean(
        [exact_categorical(values[0, q], probs[0, q], K_MAX) for q in range(queries)], 0
    )
    assert np.all(np.abs(quality - truth) <= 4 * stderr), f"seed {seed}"
    assert stderr.max() < 0.05


def test_reward_estimator_sees_past_its_largest_pull(seed: int) -> None:
    """Pulls of at most 8: N = 32 is extrapolated, close to the truth, not flat."""
    rng = np.random.default_rng(seed)
    queries, spread = 400, 0.2
    means = rng.normal(0.0, 0.1, queries)
    est = RewardEstimator(1, K_MAX, [0.0, 1.0])
    pulls = []
    for q in range(queries):
        n = 8 if q < 60 else 2
        scores = means[q] + spread * rng.standard_normal(n)
        pulls.append(
            Pull(0, q, np.zeros(n, dtype=np.int64), np.full(n, 0.01), np.stack([scores] * 2))
        )
    est.add(pulls)
    got = est.estimate()
    truth = means.mean() + spread * expected_max_standard_normal(K_MAX)
    assert abs(got.quality[0, 0, -1] - truth[-1]) <= 4 * got.stderr[0, 0, -1], f"seed {seed}"
    assert got.stderr[0, 0, -1] < 0.05
    assert got.quality[0, 0, -1] > got.quality[0, 0, 7] + 0.05  # still rising past N=8
    # utility = quality − λ·N·cost per tier; the interval is finite everywhere
    np.testing.assert_allclose(
        got.utility[1, 0] - got.quality[1, 0], -0.01 * np.arange(1, K_MAX + 1)
    )
    assert np.isfinite(got.stderr).all()
    assert got.observations[0, 0] == queries
    assert got.observations[0, 7] == 60


def test_reward_estimator_needs_scores() -> None:
    est = RewardEstimator(1, 4, [0.0])
    with pytest.raises(ValueError, match="needs scores"):
        est.add([Pull(0, 0, np.zeros(2, dtype=np.int64), np.ones(2))])
