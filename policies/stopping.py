"""When a request may stop drawing samples: one rule type, four kinds.

- ``full``: never early; all N samples are drawn.
- ``exact``: stop once the remaining samples cannot change the winner
  (``vote_decided``), so the answer is the one the full vote would give.
- ``confident``: also stop once the posterior predictive probability that the current
  leader still wins the full N-sample vote is at least 1 − δ. The posterior is a
  Dirichlet over the answers seen plus one bucket for the answers not seen yet, with a
  small symmetric prior; the remaining votes are Dirichlet-multinomial. The probability
  is a vectorised Monte Carlo with a fixed seed, so identical sample sequences make
  identical decisions. δ bounds the error averaged over answer distributions like the
  prior's (a Bayesian guarantee, tested in ``tests/policies/test_stopping.py``); on a
  near-tie the chance of differing from the full vote can exceed δ, but there the full
  vote itself is close to a coin flip.
- ``threshold`` (Best-of-N): stop at the first sample whose weighted reward reaches the
  tier's threshold t* (the policy's ``threshold``), or at N. With rewards X i.i.d. and
  λ·c the utility one more sample costs, the best such rule has E[(X − t*)+] = λ·c
  (:func:`reward_threshold`). Its samples are drawn in the waves of
  :func:`threshold_waves` (one, then pairs), each scored before the next is drawn.

The first three are for majority vote, the last for Best-of-N (``allowed_for``).

    rule = StopRule(kind="confident", delta=0.05)
    if rule.decided(counts, remaining): ...
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Literal

import msgspec
import numpy as np
import numpy.typing as npt

from policies.aggregate import vote_decided

__all__ = [
    "BEST_OF_N_STOPS",
    "MAJORITY_STOPS",
    "StopKind",
    "StopRule",
    "leader_win_probability",
    "reward_threshold",
    "threshold_waves",
]

StopKind = Literal["full", "exact", "confident", "threshold"]
MAJORITY_STOPS: tuple[StopKind, ...] = ("full", "exact", "confident")
BEST_OF_N_STOPS: tuple[StopKind, ...] = ("full", "threshold")

PRIOR = 0.5  # symmetric Dirichlet mass per seen answer
# Dirichlet mass of the answers not seen yet, pooled into one: room for a few of them.
# With 0.5 (one unseen answer) a single vote was enough to stop at δ = 0.2.
UNSEEN = 2.0
DRAWS = 2048  # Monte Carlo draws per check: standard error ~0.005 near δ = 0.05
SEED = 13
# Threshold rule: a first wave of one sample (most stops on an easy request come at once),
# then waves of two, so a request that goes on needs half the round trips.
THRESHOLD_FIRST_WAVE = 1
THRESHOLD_WAVE = 2


def leader_win_probability(
    counts: Mapping[str, int],
    remaining: int,
    *,
    prior: float = PRIOR,
    unseen: float = UNSEEN,
    draws: int = DRAWS,
    seed: int = SEED,
) -> float:
    """P(the current leader wins the vote after ``remaining`` more samples).

    A tie at the end counts 1/|tied| (ties are broken at random). The remaining votes
    are Dirichlet-multinomial with parameters ``counts + prior`` and ``unseen`` for the
    answers not seen yet; all new answers are pooled into that one bucket, the worst case
    for the leader. Every remaining sample is assumed to vote (an unextractable sample
    only helps the leader). 0 when no answer has a vote or the lead is shared.
    """
    ordered = tuple(sorted((c for c in counts.values() if c > 0), reverse=True))
    if not ordered or (len(ordered) > 1 and ordered[0] == ordered[1]):
        return 0.0
    if remaining <= 0:
        return 1.0
    return _win_probability(ordered, remaining, prior, unseen, draws, seed)


@functools.lru_cache(maxsize=1 << 16)
def _win_probability(
    ordered: tuple[int, ...], remaining: int, prior: float, unseen: float, draws: int, seed: int
) -> float:
    # A pure function of the vote so far: requests at the same tally share the result.
    rng = np.random.default_rng(seed)
    alpha = np.append(np.asarray(ordered, dtype=np.float64) + prior, unseen)
    # Gamma draws normalised per row are Dirichlet draws; multinomial broadcasts over rows.
    weights = rng.dirichlet(alpha, size=draws)
    future = rng.multinomial(remaining, weights)
    final = future + np.append(np.asarray(ordered, dtype=np.float64), 0.0)
    top = final.max(axis=1)
    tied = (final == top[:, None]).sum(axis=1)
    credit = np.where(final[:, 0] == top, 1.0 / tied, 0.0)
    return float(credit.mean())


def reward_threshold(
    rewards: npt.ArrayLike, marginal_cost: float, probs: npt.ArrayLike | None = None
) -> float:
    """The t* with E[(X − t*)+] = ``marginal_cost`` for X drawn from ``rewards``.

    ``rewards`` (m,) are the values of a discrete distribution (an empirical sample:
    equal ``probs`` unless given). Sampling until a reward reaches t* is the best rule
    for i.i.d. rewards when each sample costs ``marginal_cost`` (λ·c) and there is no cap
    on N, and its expected utility (best reward minus the cost of every sample) is t*
    itself. g(t) = E[(X − t)+] is piecewise linear and decreasing, so the equation is
    solved exactly on the segment where g crosses λ·c.

    - λ·c = 0: the largest reward (samples are free: go on until the best one shows up).
    - λ·c ≥ E[(X − min)+] = mean − min: mean − λ·c ≤ min, so the first sample always
      stops; t* is still the rule's utility (one sample: its mean minus its cost).

    ``reward_threshold([0.2, 0.5, 0.9], 0.05)`` is 0.75: (0.9 − 0.75) / 3 = 0.05.
    """
    x = np.asarray(rewards, dtype=np.float64).ravel()
    if x.size == 0 or not np.isfinite(x).all():
        raise ValueError("reward_threshold needs at least one reward, all finite")
    if not math.isfinite(marginal_cost) or marginal_cost < 0.0:
        raise ValueError(f"the marginal cost must be ≥ 0, got {marginal_cost}")
    p = np.full(x.size, 1.0 / x.size) if probs is None else np.asarray(probs, np.float64).ravel()
    if p.shape != x.shape or (p < 0).any() or not math.isclose(float(p.sum()), 1.0):
        raise ValueError("probs must be one non-negative weight per reward, summing to 1")
    order = np.argsort(x, kind="stable")
    x, p = x[order], p[order]
    if marginal_cost == 0.0:
        return float(x[p > 0].max())
    # Above the i-th sorted value only values i+1.. count: g(t) = tail_px[i] − t·tail_p[i].
    tail_p = np.cumsum(p[::-1])[::-1]
    tail_px = np.cumsum((p * x)[::-1])[::-1]
    at = tail_px - x * tail_p  # g(x_i)
    if marginal_cost >= at[0]:
        return float(tail_px[0] - marginal_cost)  # mean − λ·c (≤ min)
    # The last i with g(x_i) ≥ λ·c: t* lies in [x_i, x_{i+1}), where g = Σ_{j>i} p_j (x_j − t).
    i = int(np.flatnonzero(at >= marginal_cost)[-1])
    mass, weighted = tail_p[i + 1], tail_px[i + 1]
    return float((weighted - marginal_cost) / mass)


def threshold_waves(n: int) -> tuple[int, ...]:
    """The waves the threshold rule draws a request's ``n`` samples in: one, then twos.

    The rule looks at the rewards after each wave, so it draws a whole wave past the
    first reward over the threshold; the optimizer prices it with these same waves.
    """
    if n < 1:
        return ()
    waves = [min(THRESHOLD_FIRST_WAVE, n)]
    while sum(waves) < n:
        waves.append(min(THRESHOLD_WAVE, n - sum(waves)))
    return tuple(waves)


class StopRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """When a request stops drawing samples; ``delta`` only for ``confident``.

    ``threshold`` (Best-of-N) is decided on rewards, not votes: :meth:`reason` never
    stops it; the proxy scores each wave and stops at the policy's threshold.
    """

    kind: StopKind = "full"
    delta: float | None = None

    def __post_init__(self) -> None:
        if self.kind == "confident":
            if self.delta is None or not 0.0 < self.delta < 0.5:
                raise ValueError(
                    f"confident stopping needs 0 < delta < 0.5 (the accepted chance that the "
                    f"answer differs from the full vote), got {self.delta}"
                )
        elif self.delta is not None:
            raise ValueError(f'delta is only for stop = "confident", not {self.kind!r}')

    @property
    def stops_early(self) -> bool:
        return self.kind != "full"

    def check_strategy(self, strategy: str) -> None:
        """ValueError unless this rule can stop a ``strategy`` (majority | best_of_n) request."""
        allowed = BEST_OF_N_STOPS if strategy == "best_of_n" else MAJORITY_STOPS
        if self.kind not in allowed:
            raise ValueError(
                f"stop = {self.kind!r} is not for {strategy} (it takes one of {list(allowed)})"
            )

    def reason(self, counts: Mapping[str, int], remaining: int) -> StopKind | None:
        """Why to stop now, with ``remaining`` of the N samples not drawn; None: go on.

        ``exact`` when the vote is decided (``confident`` checks that first, so its
        reason says whether the answer is certainly the full vote's).
        """
        if self.kind in ("full", "threshold"):
            return None
        if vote_decided(counts, remaining):
            return "exact"
        if self.kind == "exact" or remaining <= 0:
            return None
        assert self.delta is not None
        win = leader_win_probability(counts, remaining)
        # Two Monte Carlo standard errors below the estimate: noise must not stop early.
        if win - 2.0 * math.sqrt(win * (1.0 - win) / DRAWS) >= 1.0 - self.delta:
            return "confident"
        return None

    def decided(self, counts: Mapping[str, int], remaining: int) -> bool:
        """Whether to stop with ``remaining`` of the N samples not drawn."""
        return remaining <= 0 or self.reason(counts, remaining) is not None
