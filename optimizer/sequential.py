"""Sequential Best-of-N: a tier's reward threshold, chosen from the rewards a run drew.

Under ``stop = "threshold"`` a request draws samples in the waves of
:func:`policies.threshold_waves` and stops after the first wave with a weighted reward
at or above the threshold t, or at the cap N; it answers the best sample drawn. For
i.i.d. rewards and no cap the best t solves E[(X − t)+] = λ·c
(:func:`policies.reward_threshold`), but requests differ: on an easy one the rule stops
at once, on a hard one it runs to the cap, and one t pooled over all of them is not the
best. So the threshold (and the cap) are chosen to maximise the estimated realised
utility: the mean over the sampled queries of E[best reward at stop] − λ·c·E[samples],
computed exactly on each query's reward distribution (:func:`rule_curves`): the rewards
it drew, smoothed when they look continuous (:func:`smoothed`; the raw empirical
distribution undervalues large N and made the estimated gain 2-5 times the realised one
on ``assist``).
The pooled closed form is one of the candidates, and is reported beside the choice.

Candidates: thresholds at the rewards seen (the rule only changes where t crosses one),
caps from the N the tier chose up to its largest allowed N, and "never stop early" at
the chosen N, which is exactly fixed-N Best-of-N. When no rule beats it on the estimate
(λ = 0, say) the tier keeps it; the policy then carries a threshold above every reward
seen (``NEVER`` margin), which stops no request that looks like the training ones.

Short math names inside: ``v`` a query's distinct rewards, ``F`` their CDF, ``q`` the
chance that one sample stays below t.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from statistics import NormalDist

import msgspec
import numpy as np
import numpy.typing as npt

from policies.stopping import reward_threshold, threshold_waves

__all__ = ["ThresholdChoice", "choose_threshold", "rule_curves", "smoothed"]

Array = npt.NDArray[np.float64]

MIN_PAIR_SAMPLES = 4  # a query with fewer samples says little about its distribution
MAX_CANDIDATES = 256  # thresholds tried; quantiles of the rewards seen beyond that
KERNEL_POINTS = 8  # per sample of a continuous reward: the smoothed distribution's atoms
TIE = 1e-9


class ThresholdChoice(msgspec.Struct, frozen=True):
    """A tier's threshold rule and what it is estimated to do, against fixed N.

    ``threshold``, ``n`` (the cap) and ``expected_samples`` go into the policy;
    ``quality``/``utility`` are the rule's mean E[best at stop] and its utility on the
    ``queries`` sampled, ``fixed_quality``/``fixed_utility`` fixed-N Best-of-N's at the
    tier's chosen N on the same distributions (their difference is what the rule adds;
    ``difference_stderr`` its standard error over queries). ``stops`` False: no rule beat
    fixed N and the threshold is above every reward seen. ``pooled_threshold``: the
    closed form on all the rewards pooled, with its ``pooled_utility`` at its best cap
    ``pooled_n``.
    """

    threshold: float
    n: int
    expected_samples: float
    quality: float
    utility: float
    fixed_quality: float
    fixed_utility: float
    difference_stderr: float
    stops: bool
    pooled_threshold: float
    pooled_utility: float
    pooled_n: int
    queries: int


def rule_curves(
    rows: Sequence[npt.ArrayLike], thresholds: npt.ArrayLike, caps: npt.ArrayLike
) -> tuple[Array, Array]:
    """Exact (quality, samples) of the threshold rule on each row's empirical distribution.

    ``rows``: Q arrays of one query's rewards (each sample equally likely, NaN ignored);
    ``thresholds`` (C,), ``caps`` (K,). Returns (Q, C, K) E[best reward at stop] and
    E[samples drawn], waves as :func:`policies.threshold_waves`. With q = P(X < t), wave j
    is reached with probability q^(samples before it), and then its best reward counts
    when it is ≥ t: E[max of w · 1{max ≥ t}]; if no wave reaches t, E[max of N · 1{max < t}].
    """
    t = np.asarray(thresholds, dtype=np.float64)
    cap = np.asarray(caps, dtype=np.int64)
    waves_of = {int(n): threshold_waves(int(n)) for n in cap}
    sizes = sorted({w for waves in waves_of.values() for w in waves})
    below = np.empty((len(rows), t.size))
    tail = {w: np.empty((len(rows), t.size)) for w in sizes}
    never = np.empty((len(rows), t.size, cap.size))
    for i, row in enumerate(rows):
        x = np.asarray(row, dtype=np.float64)
        x = x[np.isfinite(x)]
        if x.size == 0:
            raise ValueError(f"query row {i} has no finite reward")
        v, counts = np.unique(x, return_counts=True)
        F = np.cumsum(counts) / x.size
        F_before = F - counts / x.size
        at = np.searchsorted(v, t, side="left")  # how many distinct rewards are < t
        below[i] = np.concatenate([[0.0], F])[at]
        for w in sizes:
            best_is = v * (F**w - F_before**w)  # E[max of w; max = v]
            tail[w][i] = np.concatenate([np.cumsum(best_is[::-1])[::-1], [0.0]])[at]
        best_is_n = v[:, None] * (F[:, None] ** cap - F_before[:, None] ** cap)
        never[i] = np.concatenate([np.zeros((1, cap.size)), np.cumsum(best_is_n, axis=0)])[at]
    quality = never.copy()
    samples = np.zeros_like(never)
    for k, n in enumerate(cap):
        drawn = 0
        for w in waves_of[int(n)]:
            reach = below**drawn
            quality[:, :, k] += reach * tail[w]
            samples[:, :, k] += reach * w
            drawn += w
    return quality, samples


def smoothed(row: Array) -> Array:
    """A query's rewards as the distribution the rule is valued on.

    Rewards that repeat are taken as a discrete distribution, as they are. All distinct,
    they are a sample of a continuous one, whose empirical distribution caps E[max of N]
    at the sample's max when N nears the sample size: each reward becomes
    ``KERNEL_POINTS`` atoms of a Gaussian kernel (Silverman's bandwidth), shrunk toward
    the mean so the mean and variance stay the sample's (the smoothed bootstrap).
    """
    if row.size < 2 or np.unique(row).size < row.size:
        return row
    sd = float(row.std())
    if sd == 0.0:
        return row
    h = 1.06 * sd * row.size ** (-0.2)
    shrink = 1.0 / np.sqrt(1.0 + (h / sd) ** 2)
    center = row.mean() + (row - row.mean()) * shrink
    levels = (np.arange(KERNEL_POINTS) + 0.5) / KERNEL_POINTS
    z = np.array([NormalDist().inv_cdf(float(u)) for u in levels])
    return np.asarray((center[:, None] + h * shrink * z[None, :]).ravel(), dtype=np.float64)


def _candidates(pooled: Array) -> Array:
    values = np.unique(pooled)
    if values.size > MAX_CANDIDATES:
        levels = np.linspace(0.0, 1.0, MAX_CANDIDATES)
        values = np.unique(np.quantile(pooled, levels, method="inverted_cdf"))
    return values


def never_threshold(pooled: Array) -> float:
    """A threshold above every reward in ``pooled`` by their range (at least 1): fixed N."""
    if pooled.size == 0:
        return sys.float_info.max
    top, low = float(pooled.max()), float(pooled.min())
    return top + max(1.0, top - low)


def choose_threshold(
    rows: Sequence[npt.ArrayLike],
    cost_weight: float,
    cost_per_sample: float,
    n: int,
    n_cap: int,
) -> ThresholdChoice:
    """The threshold and cap that maximise the estimated realised utility on ``rows``.

    ``rows``: one array of weighted rewards per sampled query of the tier's chosen prompt;
    ``n`` the N the tier chose under fixed-N pricing, ``n_cap`` ≥ n the largest it allows.
    Queries with fewer than ``MIN_PAIR_SAMPLES`` samples are left out unless all are.
    """
    arrays = [np.asarray(r, dtype=np.float64).ravel() for r in rows]
    arrays = [a[np.isfinite(a)] for a in arrays]
    arrays = [a for a in arrays if a.size]
    rich = [a for a in arrays if a.size >= MIN_PAIR_SAMPLES]
    used = rich or arrays
    n_cap = max(n, n_cap)
    pooled = np.concatenate(used) if used else np.zeros(0)
    never = never_threshold(pooled)
    if not used:
        return ThresholdChoice(never, n, float(n), 0.0, 0.0, 0.0, 0.0, 0.0, False, never, 0.0, n, 0)
    marginal = cost_weight * cost_per_sample
    pooled_t = reward_threshold(pooled, marginal)
    thresholds = np.concatenate([_candidates(pooled), [pooled_t, never]])
    caps = np.arange(n, n_cap + 1)
    quality, samples = rule_curves([smoothed(a) for a in used], thresholds, caps)
    per_query = quality - marginal * samples  # (Q, C, K)
    utility = per_query.mean(axis=0)
    # "Never stop early" is fixed N; only at the chosen N (a larger fixed N lost the
    # estimator's own comparison).
    utility[-1, 1:] = -np.inf
    fixed = float(utility[-1, 0])
    best = np.unravel_index(int(np.argmax(utility)), utility.shape)
    # A tie (free samples, a rule that only stops at a query's best reward) is fixed N:
    # the rule must win by more than rounding.
    wins = utility[best] > fixed + TIE * (1.0 + abs(fixed))
    c, k = (int(best[0]), int(best[1])) if wins else (thresholds.size - 1, 0)
    pooled_k = int(np.argmax(utility[-2]))
    difference = per_query[:, c, k] - per_query[:, -1, 0]
    stderr = 0.0
    if difference.size > 1:
        stderr = float(difference.std(ddof=1) / np.sqrt(difference.size))
    return ThresholdChoice(
        threshold=float(thresholds[c]),
        n=int(caps[k]),
        expected_samples=float(samples[:, c, k].mean()),
        quality=float(quality[:, c, k].mean()),
        utility=float(utility[c, k]),
        fixed_quality=float(quality[:, -1, 0].mean()),
        fixed_utility=fixed,
        difference_stderr=stderr,
        stops=bool(c != thresholds.size - 1),
        pooled_threshold=float(pooled_t),
        pooled_utility=float(utility[-2, pooled_k]),
        pooled_n=int(caps[pooled_k]),
        queries=len(used),
    )
