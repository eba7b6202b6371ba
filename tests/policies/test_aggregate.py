from __future__ import annotations

import numpy as np
import pytest

from policies import best_of_n, majority_vote, vote_decided, weight_vector


def test_majority_picks_most_common_and_reports_confidence(rng: np.random.Generator) -> None:
    outcome = majority_vote(["12", "7", "12", None, "12"], rng)
    assert outcome.answer == "12"
    assert outcome.winner == 0
    assert outcome.counts == {"12": 3, "7": 1}
    assert outcome.unextractable == 1
    assert outcome.agreement == pytest.approx(3 / 5)
    assert outcome.margin == pytest.approx(2 / 5)
    assert outcome.ranked() == ["12", "7"]
    assert outcome.credit("12") == 1.0
    assert outcome.credit("7") == 0.0


def test_single_sample_is_its_own_majority(rng: np.random.Generator) -> None:
    outcome = majority_vote(["42"], rng)
    assert (outcome.answer, outcome.winner, outcome.agreement, outcome.margin) == (
        "42",
        0,
        1.0,
        1.0,
    )


def test_all_unextractable_gives_no_answer(rng: np.random.Generator) -> None:
    outcome = majority_vote([None, None, None], rng)
    assert outcome.answer is None
    assert outcome.winner is None
    assert outcome.unextractable == 3
    assert outcome.agreement == 0.0
    assert outcome.credit("1") == 0.0
    assert majority_vote([], rng).samples == 0


def test_tie_is_broken_uniformly_at_random(seed: int) -> None:
    rng = np.random.default_rng(seed)
    answers = ["a", "b", "a", "b", "c"]
    winners = [majority_vote(answers, rng).answer for _ in range(4000)]
    share_a = winners.count("a") / len(winners)
    assert set(winners) == {"a", "b"}, f"seed={seed}"
    assert 0.45 < share_a < 0.55, f"seed={seed}: share of 'a' {share_a}"
    outcome = majority_vote(answers, rng)
    assert set(outcome.tied) == {"a", "b"}
    assert outcome.credit("a") == 0.5
    assert outcome.margin == 0.0
    assert answers[outcome.winner or 0] == outcome.answer


@pytest.mark.parametrize(
    ("counts", "remaining", "decided"),
    [
        ({"a": 5, "b": 2}, 2, True),
        ({"a": 5, "b": 2}, 3, False),  # 5 vs 5 would be a random tie
        ({"a": 3}, 2, True),
        ({"a": 3}, 3, False),  # a new answer could tie
        ({}, 0, False),
    ],
)
def test_vote_decided_is_exact(counts: dict[str, int], remaining: int, decided: bool) -> None:
    assert vote_decided(counts, remaining) is decided


def test_best_of_n_uses_tier_weights(rng: np.random.Generator) -> None:
    rewards = [[0.9, 0.1], [0.5, 0.6], [0.2, 0.95]]
    helpful = best_of_n(rewards, weight_vector(["help", "harm"], {"help": 1.0}), rng)
    harmless = best_of_n(rewards, weight_vector(["help", "harm"], {"harm": 1.0}), rng)
    balanced = best_of_n(rewards, weight_vector(["help", "harm"], None), rng)
    assert helpful.index == 0
    assert harmless.index == 2
    assert balanced.index == 2  # (0.2 + 0.95) / 2 is the best mean
    assert balanced.score == pytest.approx(0.575)
    assert balanced.margin == pytest.approx(0.575 - 0.55)
    assert balanced.ranked() == [2, 1, 0]


def test_best_of_n_skips_unscored_and_handles_none_scored(rng: np.random.Generator) -> None:
    nan = float("nan")
    outcome = best_of_n([[nan, nan], [0.1, 0.2]], [1.0, 1.0], rng)
    assert outcome.index == 1
    assert outcome.margin == 0.0
    none = best_of_n([[nan, nan]], [1.0, 1.0], rng)
    assert none.index is None
    assert none.ranked() == []
    single = best_of_n([[0.3]], [2.0], rng)
    assert (single.index, single.score) == (0, pytest.approx(0.6))


def test_best_of_n_tie_is_random(seed: int) -> None:
    rng = np.random.default_rng(seed)
    picks = {best_of_n([[1.0], [1.0], [0.0]], [1.0], rng).index for _ in range(200)}
    assert picks == {0, 1}, f"seed={seed}"
