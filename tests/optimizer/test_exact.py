from __future__ import annotations

import itertools

import numpy as np
import pytest

from optimizer import best_of_n_exact


def _brute_force(scores: np.ndarray, probs: np.ndarray, n: int) -> float:
    total = 0.0
    for draw in itertools.product(range(len(scores)), repeat=n):
        total += float(np.prod(probs[list(draw)])) * float(scores[list(draw)].max())
    return total


def test_matches_brute_force_enumeration(rng: np.random.Generator, seed: int) -> None:
    scores = rng.normal(size=(2, 3, 4))
    scores[0, 0, 1] = scores[0, 0, 2]  # a tie must not change anything
    probs = rng.dirichlet(np.ones(4), size=(2, 3))
    exact = best_of_n_exact(scores, probs, 4)
    assert exact.shape == (2, 3, 4)
    for p, q, n in itertools.product(range(2), range(3), range(1, 5)):
        expected = _brute_force(scores[p, q], probs[p, q], n)
        assert exact[p, q, n - 1] == pytest.approx(expected, abs=1e-12), f"seed {seed}"


def test_n_equal_one_is_the_mean_and_large_n_tends_to_the_best(rng: np.random.Generator) -> None:
    scores = rng.uniform(size=(1, 2, 6))
    probs = rng.uniform(0.5, 1.0, size=(1, 2, 6))
    probs /= probs.sum(axis=-1, keepdims=True)  # every outcome ≥ 1/12 likely
    exact = best_of_n_exact(scores, probs, 400)
    np.testing.assert_allclose(exact[..., 0], (scores * probs).sum(axis=-1))
    np.testing.assert_allclose(exact[..., -1], scores.max(axis=-1), atol=1e-6)
    assert np.all(np.diff(exact, axis=-1) >= -1e-12)


def test_matches_monte_carlo(rng: np.random.Generator, seed: int) -> None:
    scores = rng.normal(size=(1, 1, 10))
    probs = rng.dirichlet(np.ones(10), size=(1, 1))
    n, trials = 16, 40_000
    draws = rng.choice(10, size=(trials, n), p=probs[0, 0])
    mc = scores[0, 0][draws].max(axis=1)
    exact = best_of_n_exact(scores, probs, n)[0, 0, -1]
    assert abs(mc.mean() - exact) < 5 * mc.std() / np.sqrt(trials), f"seed {seed}"


def test_shapes_must_agree() -> None:
    with pytest.raises(ValueError, match="must be equal"):
        best_of_n_exact(np.zeros((1, 2, 3)), np.ones((1, 2, 4)), 2)
