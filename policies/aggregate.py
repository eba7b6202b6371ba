"""Aggregation of N samples into one answer: majority vote and Best-of-N.

Both return the confidence figures the proxy exports (agreement share, margin,
winning score). Ties are broken uniformly at random with the caller's generator.

    outcome = majority_vote(["12", "12", None, "7"], rng)
    outcome.answer, outcome.agreement   # ("12", 0.5)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import msgspec
import numpy as np
import numpy.typing as npt

__all__ = [
    "BestOfNOutcome",
    "MajorityOutcome",
    "best_of_n",
    "majority_vote",
    "vote_decided",
    "weight_vector",
]


class MajorityOutcome(msgspec.Struct, frozen=True):
    """The result of a majority vote over ``samples`` samples.

    ``answer`` is None when no sample had an extractable answer. ``winner`` is the index
    of the first sample that voted for ``answer``. ``agreement`` is the share of all
    samples (unextractable ones included) that voted for ``answer``; ``margin`` is the
    winner's lead over the runner-up as a share of all samples.
    """

    answer: str | None
    winner: int | None
    counts: dict[str, int]
    tied: tuple[str, ...]
    samples: int
    unextractable: int
    agreement: float
    margin: float

    def ranked(self) -> list[str]:
        """Distinct answers, most votes first, the chosen answer leading."""
        rest = [a for a in self.counts if a != self.answer]
        return ([self.answer] if self.answer is not None else []) + rest

    def credit(self, gold: str) -> float:
        """Expected correctness under random tie-breaking: 1/|tied| if gold is tied on top."""
        return 1.0 / len(self.tied) if gold in self.tied else 0.0


class BestOfNOutcome(msgspec.Struct, frozen=True):
    """The result of Best-of-N: ``index`` of the highest weighted score (None if none scored)."""

    index: int | None
    score: float
    scores: tuple[float, ...]
    margin: float

    def ranked(self) -> list[int]:
        """Indices of scored samples, best first, the chosen one leading."""
        order = [
            i
            for i in np.argsort(-np.asarray(self.scores), kind="stable").tolist()
            if np.isfinite(self.scores[i])
        ]
        if self.index is not None:
            order.remove(self.index)
            order.insert(0, self.index)
        return order


def majority_vote(answers: Sequence[str | None], rng: np.random.Generator) -> MajorityOutcome:
    """Vote over extracted answers; None marks a sample whose answer could not be extracted."""
    samples = len(answers)
    counter = Counter(a for a in answers if a is not None)
    counts = dict(sorted(counter.items(), key=lambda item: -item[1]))
    unextractable = samples - sum(counts.values())
    if not counts:
        return MajorityOutcome(None, None, {}, (), samples, unextractable, 0.0, 0.0)
    top = next(iter(counts.values()))
    tied = tuple(a for a, c in counts.items() if c == top)
    answer = tied[int(rng.integers(len(tied)))] if len(tied) > 1 else tied[0]
    second = next((c for a, c in counts.items() if a != answer), 0)
    return MajorityOutcome(
        answer=answer,
        winner=answers.index(answer),
        counts=counts,
        tied=tied,
        samples=samples,
        unextractable=unextractable,
        agreement=top / samples,
        margin=(top - second) / samples,
    )


def vote_decided(counts: Mapping[str, int], remaining: int) -> bool:
    """Whether ``remaining`` more votes can no longer change the winner (exact early stop).

    The leader must beat the runner-up even if every remaining vote goes to the runner-up;
    a possible tie is not decided, since ties are broken at random.
    """
    ordered = sorted(counts.values(), reverse=True)
    if not ordered:
        return False
    second = ordered[1] if len(ordered) > 1 else 0
    return ordered[0] > second + remaining


def weight_vector(
    objectives: Sequence[str], weights: Mapping[str, float] | None
) -> npt.NDArray[np.float64]:
    """Weights in the order of ``objectives``; None means equal weights summing to 1."""
    if weights is None:
        return np.full(len(objectives), 1.0 / len(objectives))
    return np.array([float(weights.get(name, 0.0)) for name in objectives])


def best_of_n(
    rewards: npt.ArrayLike, weights: npt.ArrayLike, rng: np.random.Generator
) -> BestOfNOutcome:
    """Pick the sample with the highest weighted reward Σ_k w_k·r_k.

    ``rewards``: (N, K), a NaN row for a sample that could not be scored.
    ``weights``: (K,).
    """
    matrix = np.asarray(rewards, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"rewards must be (N, K), got shape {matrix.shape}")
    w = np.asarray(weights, dtype=np.float64)
    scores = matrix @ w if matrix.shape[0] else np.zeros(0)
    scored = np.isfinite(scores)
    if not scored.any():
        return BestOfNOutcome(None, float("nan"), tuple(scores.tolist()), 0.0)
    best = scores[scored].max()
    tied = np.flatnonzero(scored & (scores == best))
    index = int(tied[rng.integers(len(tied))]) if len(tied) > 1 else int(tied[0])
    others = scores[scored & (np.arange(len(scores)) != index)]
    margin = float(best - others.max()) if others.size else 0.0
    return BestOfNOutcome(index, float(best), tuple(scores.tolist()), margin)
