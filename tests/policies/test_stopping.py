"""Stopping rules for the majority vote: exact never changes the answer, confident
differs from the full vote at most δ of the time on distributions like its prior's."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from policies import StopRule, leader_win_probability, majority_vote


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
