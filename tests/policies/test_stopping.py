"""Stopping rules. Majority vote: exact never changes the answer, confident differs from
the full vote at most δ of the time on distributions like its prior's. Best-of-N: the
reward threshold matches the closed forms and is the best threshold and better than
any fixed N on i.i.d. rewards."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from policies import (
    StopRule,
    leader_win_probability,
    majority_vote,
    reward_threshold,
    threshold_waves,
)


def stopped_answer(rule: StopRule, answers: list[str]) -> tuple[str | None, int]:
    """The leader when ``rule`` stops on this sequence, and how many samples it drew."""
    counts: Counter[str] = Counter()
    for i, answer in enumerate(answers):
        counts[answer] += 1
        if rule.decided(counts, len(answers) - i - 1):
            break
    top = counts.most_common(2)
    unique = len(top) == 1 or top[0][1] > top[1][1]
    return (top[0][0] if unique else None), sum(counts.values())


def full_vote_error(answer: str | None, answers: list[str], drawn: int) -> float:
    """Chance that ``answer`` differs from the full vote (ties broken at random); 0 when
    every sample was drawn (the same vote)."""
    if drawn == len(answers):
        return 0.0
    counts = Counter(answers)
    top = max(counts.values())
    tied = [a for a, c in counts.items() if c == top]
    return 1.0 - 1.0 / len(tied) if answer in tied else 1.0


def test_exact_stopping_always_gives_the_full_votes_answer(rng: np.random.Generator) -> None:
    rule = StopRule(kind="exact")
    for _ in range(400):
        n = int(rng.integers(1, 33))
        p = rng.dirichlet(np.full(3, 0.7))
        answers = [str(a) for a in rng.choice(3, size=n, p=p)]
        answer, drawn = stopped_answer(rule, answers)
        full = majority_vote(answers, np.random.default_rng(0))
        if len(full.tied) == 1:
            assert answer == full.answer, answers
        assert drawn <= n


@pytest.mark.parametrize("delta", [0.05, 0.2])
def test_confident_stopping_differs_from_the_full_vote_at_most_delta(
    seed: int, delta: float
) -> None:
    # Answer distributions like the prior's: 2-4 answers, Dirichlet(0.5), N from 5 to 32.
    rng = np.random.default_rng(seed)
    rule = StopRule(kind="confident", delta=delta)
    errors, drawn, total = 0.0, 0, 0
    trials = 1500
    for _ in range(trials):
        k, n = int(rng.integers(2, 5)), int(rng.integers(5, 33))
        p = rng.dirichlet(np.full(k, 0.5))
        answers = [str(a) for a in rng.choice(k, size=n, p=p)]
        answer, used = stopped_answer(rule, answers)
        errors += full_vote_error(answer, answers, used)
        drawn, total = drawn + used, total + n
    rate = errors / trials
    assert rate <= delta, f"seed {seed}: differed from the full vote {rate:.3f} > δ={delta}"
    # and it does stop early: a rule that never stops would pass the first check
    assert drawn / total < 0.7, f"seed {seed}: drew {drawn / total:.2f} of N"


def test_a_looser_delta_stops_sooner_on_the_same_sequences(rng: np.random.Generator) -> None:
    tight, loose = StopRule(kind="confident", delta=0.01), StopRule(kind="confident", delta=0.2)
    tight_drawn = loose_drawn = 0
    for _ in range(200):
        answers = [str(a) for a in rng.choice(3, size=16, p=[0.6, 0.3, 0.1])]
        tight_drawn += stopped_answer(tight, answers)[1]
        loose_drawn += stopped_answer(loose, answers)[1]
    assert loose_drawn < tight_drawn


def test_leader_win_probability_edges() -> None:
    assert leader_win_probability({"a": 3, "b": 3}, 4) == 0.0  # no leader
    assert leader_win_probability({}, 4) == 0.0
    assert leader_win_probability({"a": 2, "b": 1}, 0) == 1.0
    # The same tally gives the same probability (a fixed seed), and more to come lowers it.
    assert leader_win_probability({"a": 6, "b": 1}, 3) == leader_win_probability(
        {"b": 1, "a": 6}, 3
    )
    assert leader_win_probability({"a": 6, "b": 1}, 3) > leader_win_probability(
        {"a": 6, "b": 1}, 20
    )
    # one vote is far from sure, even with few to come
    assert leader_win_probability({"a": 1}, 31) < 0.5
    assert not StopRule(kind="confident", delta=0.2).decided({"a": 1}, 4)


def test_exact_and_full_never_stop_on_confidence() -> None:
    counts = {"a": 9, "b": 1}
    assert StopRule(kind="full").reason(counts, 3) is None
    assert StopRule(kind="exact").reason(counts, 9) is None
    assert StopRule(kind="exact").reason(counts, 7) == "exact"
    assert StopRule(kind="confident", delta=0.05).reason(counts, 9) == "confident"
    assert StopRule(kind="confident", delta=0.05).reason(counts, 7) == "exact"


@pytest.mark.parametrize("delta", [None, 0.0, 0.5, -1.0])
def test_confident_needs_a_delta_between_0_and_one_half(delta: float | None) -> None:
    with pytest.raises(ValueError, match=r"0 < delta < 0\.5"):
        StopRule(kind="confident", delta=delta)


# -- the threshold rule (Best-of-N) ---------------------------------------------------


def grid(quantile: Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]], m: int) -> Any:
    """m equally likely values at the mid-quantiles of a distribution: its discretisation."""
    return quantile((np.arange(m) + 0.5) / m)


@pytest.mark.parametrize("cost", [0.001, 0.01, 0.05, 0.2])
def test_reward_threshold_matches_the_uniform_closed_form(cost: float) -> None:
    # E[(X − t)+] = (1 − t)² / 2 for X ~ U(0, 1), so t* = 1 − sqrt(2·λc).
    t = reward_threshold(grid(lambda u: u, 100_000), cost)
    assert t == pytest.approx(1.0 - math.sqrt(2.0 * cost), abs=1e-4)


@pytest.mark.parametrize("cost", [0.01, 0.1, 0.5])
def test_reward_threshold_matches_the_exponential_closed_form(cost: float) -> None:
    # E[(X − t)+] = e^(−t) for X ~ Exp(1), so t* = −ln(λc).
    t = reward_threshold(grid(lambda u: -np.log1p(-u), 200_000), cost)
    assert t == pytest.approx(-math.log(cost), abs=2e-3)


@pytest.mark.parametrize(
    ("cost", "expected"),
    [
        (0.0, 3.0),  # free samples: wait for the best reward there is
        (0.1, 2.5),  # on [1, 3]: 0.2·(3 − t) = 0.1
        (0.6, 0.6),  # on [0, 1]: 0.3·(1 − t) + 0.2·(3 − t) = 0.6
        (0.9, 0.0),  # = mean − min: the first sample always stops
        (1.2, -0.3),  # past it: mean − λc, still the rule's utility
    ],
)
def test_reward_threshold_on_a_discrete_distribution(cost: float, expected: float) -> None:
    values, probs = [3.0, 0.0, 1.0], [0.2, 0.5, 0.3]
    t = reward_threshold(values, cost, probs)
    assert t == pytest.approx(expected, abs=1e-12)
    # The defining equation holds wherever t* is above the smallest reward.
    if 0.0 < cost < 0.9:
        assert sum(p * max(v - t, 0.0) for v, p in zip(values, probs, strict=True)) == (
            pytest.approx(cost)
        )
    # The same distribution as an empirical sample of repeated values.
    sample = [0.0] * 5 + [1.0] * 3 + [3.0] * 2
    assert reward_threshold(sample, cost) == pytest.approx(expected, abs=1e-12)


def test_reward_threshold_refuses_what_it_cannot_solve() -> None:
    with pytest.raises(ValueError, match="at least one reward"):
        reward_threshold([], 0.1)
    with pytest.raises(ValueError, match="at least one reward"):
        reward_threshold([0.1, float("nan")], 0.1)
    with pytest.raises(ValueError, match="marginal cost"):
        reward_threshold([0.1], -0.1)
    with pytest.raises(ValueError, match="probs"):
        reward_threshold([0.1, 0.2], 0.1, [0.7, 0.7])


def test_threshold_waves_are_one_then_pairs_summing_to_n() -> None:
    assert threshold_waves(1) == (1,)
    assert threshold_waves(2) == (1, 1)
    assert threshold_waves(6) == (1, 2, 2, 1)
    assert threshold_waves(7) == (1, 2, 2, 2)
    assert all(sum(threshold_waves(n)) == n for n in range(1, 40))


def sequential_utility(
    rewards: npt.NDArray[np.float64], threshold: float, cost: float
) -> npt.NDArray[np.float64]:
    """Per request (row): best reward when the first one ≥ ``threshold`` arrives (one
    sample at a time, or the whole row), minus ``cost`` per sample drawn."""
    hit = rewards >= threshold
    stop = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, rewards.shape[1])
    drawn = np.arange(rewards.shape[1])[None, :] < stop[:, None]
    best = np.where(drawn, rewards, -np.inf).max(axis=1)
    return np.asarray(best - cost * stop, dtype=np.float64)


@pytest.mark.parametrize(
    ("draw", "cost"),
    [
        (lambda rng, shape: rng.random(shape), 0.01),
        (lambda rng, shape: rng.exponential(size=shape), 0.1),
    ],
    ids=["uniform", "exponential"],
)
def test_the_threshold_rule_beats_other_thresholds_and_every_fixed_n(
    draw: Callable[[np.random.Generator, tuple[int, int]], npt.NDArray[np.float64]],
    cost: float,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    # A cap far past where the rule stops (P(no hit in 150) < 1e-6 here).
    rewards = draw(rng, (10_000, 150))
    t_star = reward_threshold(draw(rng, (1, 400_000)), cost)
    at = sequential_utility(rewards, t_star, cost)
    # The utility of the optimal rule is t* itself (the house-selling identity).
    assert abs(at.mean() - t_star) < 4 * at.std() / math.sqrt(at.size), f"seed {seed}"
    for step in (-0.25, -0.1, 0.1, 0.25):
        # Same rewards for every threshold: the comparison is paired.
        other = sequential_utility(rewards, t_star + step * t_star, cost)
        diff = at - other
        assert diff.mean() > 2 * diff.std() / math.sqrt(diff.size), f"seed {seed}, step {step}"
    fixed = np.maximum.accumulate(rewards[:, :60], axis=1) - cost * np.arange(1, 61)
    best_fixed = fixed.mean(axis=0).max()
    assert at.mean() > best_fixed, f"seed {seed}: rule {at.mean()} vs fixed {best_fixed}"
