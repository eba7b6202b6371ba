"""Empirical-Bayes estimate of each query's N-sample majority-vote credit.

With m samples of a query, the credit of a vote over N > m samples cannot be
estimated without a model: plug-in and Pólya-urn estimates regress toward a coin
flip, because most queries are in truth near-deterministic (a prompt almost always
gives the same answer). Here the model is learned from the data: a query's answer
distribution is summarised as θ = (gold, top wrong, second wrong, the rest as
distinct one-off answers) on a grid; a prior over the grid is fitted to all queries
sampled so far by EM (the nonparametric maximum-likelihood prior); each query's
credit at every N is its posterior mean of the exact credit under θ.

A query's votes are summarised the same way, its wrong answers sorted by count, and by
default scored as if the observed top wrong answer were θ's top wrong answer. With one
or two samples a query that biases the prior toward concentrated wrong answers (a
lone wrong vote is likelier under a large w1), so large-N credits come out low; the
label-symmetric likelihood (``symmetric=True``) sums over which of θ's answers the
observed ones are.

Short math names inside: ``g, w1, w2, r`` the four masses, ``J`` grid points.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from math import lgamma
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["EbFit", "eb_credit", "eb_fit", "samples_table"]

logger = logging.getLogger(__name__)

Array = npt.NDArray[np.float64]
STEP = 0.05
EM_ITERATIONS = 300  # EM for this prior converges slowly; the fit runs on distinct summaries
GROUP_ITERATIONS = 300
GROUP_ITERATIONS_WARM = 30
SHRINKAGE = 5.0  # a prompt's prior weighs the pooled one like this many queries
FLOOR = 1e-4  # a grid point never rules a count out completely: θ is only approximate


@lru_cache(maxsize=4)
def _grid() -> Array:
    """(J, 4) grid of (g, w1, w2, r), w1 ≥ w2, summing to 1."""
    ticks = np.round(np.arange(0, 1 + STEP / 2, STEP), 10)
    points = [
        (g, w1, w2, 1 - g - w1 - w2)
        for g in ticks
        for w1 in ticks
        for w2 in ticks
        if w2 <= w1 and g + w1 + w2 <= 1 + 1e-9
    ]
    grid = np.array(points)
    grid[:, 3] = np.clip(grid[:, 3], 0.0, 1.0)
    return grid


def _votes(total: int) -> npt.NDArray[np.int64]:
    """Every (gold, w1, w2, one-offs) count vector summing to ``total``: (V, 4)."""
    a, b, c = np.meshgrid(*(np.arange(total + 1),) * 3, indexing="ij")
    keep = a + b + c <= total
    a, b, c = a[keep], b[keep], c[keep]
    return np.stack([a, b, c, total - a - b - c], axis=1).astype(np.int64)


CACHE_DIR_ENV = "IAPO_CACHE_DIR"


@lru_cache(maxsize=4)
def _credit_table(k_max: int) -> Array:
    """(J, k_max) credit of every grid point, built in memory (well under a second at
    k_max=32); kept on disk only in the directory ``$IAPO_CACHE_DIR`` names, if set.

    Library code writes no file it was not asked for: no ``~/.cache`` by default.
    """
    directory = os.environ.get(CACHE_DIR_ENV)
    if not directory:
        return _build_credit_table(k_max)
    path = Path(directory) / f"eb-credit-v1-{STEP}-{k_max}.npy"
    try:
        table: Array = np.load(path)
        if table.shape == (_grid().shape[0], k_max):
            return table
    except (OSError, ValueError):
        pass
    table = _build_credit_table(k_max)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
        np.save(tmp, table)
        tmp.replace(path)
    except OSError as exc:  # a read-only directory: compute it each time
        logger.info("cannot cache the credit table at %s: %s", path, exc)
    return table


def _mass_powers(k_max: int) -> tuple[Array, Array]:
    """0!..k_max!, and (4, J, k_max + 1): each grid mass to the power 0..k_max over that
    power's factorial."""
    factorial = np.exp([lgamma(i + 1) for i in range(k_max + 1)])
    powers: Array = _grid().T[:, :, None] ** np.arange(k_max + 1) / factorial
    return factorial, powers


def _vote_weights(
    powers: Array,
    a: npt.NDArray[np.int64],
    b: npt.NDArray[np.int64],
    c: npt.NDArray[np.int64],
    s: npt.NDArray[np.int64],
) -> Array:
    """(J, V): Π mass**count / count! of each vote vector (a gold, b and c the two wrong
    answers, s one-offs) under each grid point; times t! it is the vector's probability."""
    prob: Array = powers[0][:, a] * powers[1][:, b]
    prob *= powers[2][:, c]
    prob *= powers[3][:, s]
    return prob


def _build_credit_table(k_max: int) -> Array:
    """(J, k_max): exact expected majority credit of gold under each grid point θ.

    The rest mass ``r`` is one-off answers: each such sample is its own answer. Only
    the vote vectors where gold is among the top answers are summed, each as a product
    of four tabulated ``mass**count / count!`` (no exp of a log per grid point and vote).
    """
    grid = _grid()
    factorial, powers = _mass_powers(k_max)
    out = np.empty((grid.shape[0], k_max))
    for k in range(1, k_max + 1):
        a, b, c, s = _votes(k).T
        top = np.maximum(np.maximum(a, b), np.maximum(c, (s > 0).astype(np.int64)))
        wins = a == top
        a, b, c, s, top = a[wins], b[wins], c[wins], s[wins], top[wins]
        tied = 1 + (b == top) + (c == top) + np.where(top == 1, s, 0)
        out[:, k - 1] = _vote_weights(powers, a, b, c, s) @ (factorial[k] / tied)
    return out


def _summaries(counts: npt.NDArray[np.int64], none: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """(M, 4): gold votes, top wrong, second wrong, everything else (incl. no answer)."""
    gold = counts[:, 0]
    wrong = -np.sort(-counts[:, 1:], axis=1) if counts.shape[1] > 1 else np.zeros((len(counts), 0))
    pad = np.zeros((len(counts), max(0, 2 - wrong.shape[1])), dtype=np.int64)
    wrong = np.concatenate([wrong.astype(np.int64), pad], axis=1)
    rest = wrong[:, 2:].sum(axis=1) + none
    return np.stack([gold, wrong[:, 0], wrong[:, 1], rest], axis=1)


def _likelihood(summaries: npt.NDArray[np.int64], log_grid: Array) -> Array:
    """(D, J) likelihood of each summary under each grid point, up to a row constant
    (the multinomial coefficient cancels in every posterior)."""
    log_like = summaries.astype(np.float64) @ log_grid.T
    log_like -= log_like.max(axis=1, keepdims=True)
    out: Array = np.exp(log_like)
    return out


def _likelihood_sym(summaries: npt.NDArray[np.generic], log_grid: Array) -> Array:
    """:func:`_likelihood` without the labelling bias: the observed top and second
    wrong answers may be any two of the model's answers (w1, w2 or a one-off, which only
    a single vote can be), so a lone wrong vote has likelihood w1 + w2 + r, not w1.

    Summing over the labellings matters when a query has one or two samples: scoring a
    lone wrong vote as w1 makes the fitted prior believe wrong answers are concentrated,
    which drags every large-N credit down.
    """
    s = np.asarray(summaries, dtype=np.float64)
    a, b, c, rest = (s[:, i : i + 1] for i in range(4))
    lg, l1, l2, lr = (log_grid[:, i][None, :] for i in range(4))
    lone_b = ((b > 0) & (b <= 1 + 1e-9))[:, 0]
    lone_c = ((c > 0) & (c <= 1 + 1e-9))[:, 0]
    # The two labellings every row has (the second only with a wrong vote) ...
    log_like = np.where(b > 0, np.logaddexp(b * l1 + c * l2, b * l2 + c * l1), b * l1 + c * l2)
    # ... and those only lone votes allow (a one-off answer is seen once), on those rows.
    one_off = lone_b & ((c[:, 0] == 0) | lone_c)
    for rows, pairs in (
        (lone_c, ((l1, lr), (l2, lr))),
        (lone_b & lone_c, ((lr, l1), (lr, l2))),
        (one_off, ((lr, lr),)),
    ):
        if rows.any():
            for for_b, for_c in pairs:
                term = b[rows] * for_b + c[rows] * for_c
                log_like[rows] = np.logaddexp(log_like[rows], term)
    log_like += a * lg + rest * lr
    log_like -= log_like.max(axis=1, keepdims=True)
    out: Array = np.exp(log_like)
    return out


def _fit(
    like: Array, weight: Array, prior: Array, iterations: int, anchor: Array | None, strength: float
) -> Array:
    """EM for the prior over the grid; with ``anchor``, a MAP fit that shrinks toward
    it as if ``strength`` extra queries had been drawn from it."""
    total = weight.sum()
    for _ in range(iterations):
        # Σ_d w_d · posterior_d, as two matrix-vector products (no D×J temporaries).
        prior = prior * ((weight / np.maximum(like @ prior, 1e-300)) @ like)
        if anchor is not None:
            prior = (prior + strength * anchor) / (total + strength)
        else:
            prior = prior / total
    return prior


@dataclass(frozen=True, slots=True)
class EbFit:
    """Each row's posterior over the grid (stored once per distinct summary) and the
    pooled prior; :meth:`mean` is a row's posterior mean of any per-θ table."""

    posterior: Array  # (D, J)
    inverse: npt.NDArray[np.int64]  # (M,): each row's distinct summary
    pooled: Array  # (J,)

    def mean(self, table: Array) -> Array:
        """(M, K): every row's posterior mean of ``table`` (J, K)."""
        result: Array = (self.posterior @ table)[self.inverse]
        return result


def eb_fit(
    counts: npt.NDArray[np.int64],
    none: npt.NDArray[np.int64],
    groups: npt.NDArray[np.int64] | None = None,
    prior: Array | None = None,
    iterations: int = EM_ITERATIONS,
    group_priors: dict[int, Array] | None = None,
    symmetric: bool = False,
) -> EbFit:
    """Fit the prior and every row's posterior over θ for M queries.

    ``counts`` (M, w): votes per answer code (code 0 = gold); ``none`` (M,): samples
    with no answer; ``groups`` (M,): the prompt of each row. A prior is fitted to all
    rows (pass all of them), then each group gets its own prior shrunk toward it
    (prompts differ in how often they are stuck on a wrong answer; few queries of a
    prompt say little on their own). ``prior`` (J,) warm-starts the pooled fit and
    ``group_priors`` (updated in place) the per-group fits.
    ``symmetric``: score summaries with :func:`_likelihood_sym` (no labelling bias).
    """
    grid = _grid()
    log_grid = np.log(np.maximum(grid, FLOOR))
    summary = _summaries(counts, none)
    group = np.zeros(len(summary), dtype=np.int64) if groups is None else np.asarray(groups)
    start = prior if prior is not None else np.full(grid.shape[0], 1.0 / grid.shape[0])
    # Queries with the same summary share a likelihood: fit the pooled prior on distinct ones.
    summaries, counts_of = np.unique(summary, axis=0, return_counts=True)
    likelihood = _likelihood_sym if symmetric else _likelihood
    pooled = _fit(
        likelihood(summaries, log_grid), counts_of.astype(np.float64), start, iterations, None, 0.0
    )
    keyed = np.concatenate([group[:, None], summary], axis=1)
    distinct, inverse, weight = np.unique(keyed, axis=0, return_inverse=True, return_counts=True)
    like = likelihood(distinct[:, 1:], log_grid)
    weight = weight.astype(np.float64)
    posterior = np.empty_like(like)
    known = group_priors if group_priors is not None else {}
    for g in np.unique(distinct[:, 0]).tolist():
        rows = distinct[:, 0] == g
        own = known[g] = _group_prior(like[rows], weight[rows], pooled, known.get(g))
        joint = like[rows] * own
        posterior[rows] = joint / joint.sum(axis=1, keepdims=True)
    return EbFit(posterior, inverse.ravel().astype(np.int64), pooled)


def eb_credit(
    counts: npt.NDArray[np.int64],
    none: npt.NDArray[np.int64],
    k_max: int,
    groups: npt.NDArray[np.int64] | None = None,
    prior: Array | None = None,
    iterations: int = EM_ITERATIONS,
    group_priors: dict[int, Array] | None = None,
    symmetric: bool = False,
) -> tuple[Array, Array]:
    """Posterior-mean majority credit at N = 1..k_max for M queries: (M, k_max), and the
    pooled prior (:func:`eb_fit` has the arguments)."""
    fit = eb_fit(counts, none, groups, prior, iterations, group_priors, symmetric)
    return fit.mean(_credit_table(k_max)), fit.pooled


@lru_cache(maxsize=8)
def samples_table(k_max: int, stops_early: bool) -> Array:
    """(J, k_max): expected samples one N-sample vote draws under each grid point θ.

    Without early stopping, N. With exact stopping (``policies.vote_decided``: the
    leader's lead over the runner-up exceeds the samples still to come), drawn one at a
    time, the vote stops at the first t with gap_t > N − t. ``h_t = gap_t + t`` never
    decreases (one sample moves the gap by at most one), so the vote is still running
    after t < N samples exactly when h_t ≤ N, and E[τ_N] = 1 + Σ_{t=1}^{N-1} P(h_t ≤ N),
    summed exactly over the vote vectors at each t as in the credit table (one-off
    answers count one vote each). Confident stopping stops no later than exact stopping
    on every sequence (it checks the exact rule first), so this is also its upper bound.
    """
    grid = _grid()
    sizes = np.arange(1, k_max + 1, dtype=np.float64)
    if not stops_early:
        return np.broadcast_to(sizes, (grid.shape[0], k_max)).copy()
    factorial, powers = _mass_powers(k_max)
    out = np.ones((grid.shape[0], k_max))
    for t in range(1, k_max):
        votes = _votes(t)
        a, b, c, s = votes.T
        # the two largest of {a, b, c} and the s one-off answers' single votes
        tallies = np.stack([a, b, c, (s >= 1).astype(np.int64), (s >= 2).astype(np.int64)], 1)
        top2 = -np.sort(-tallies, axis=1)[:, :2]
        h = top2[:, 0] - top2[:, 1] + t
        prob = _vote_weights(powers, a, b, c, s) * factorial[t]
        # P(h_t ≤ N) for every N > t at once: (J, V) @ (V, K) indicators
        running = (h[:, None] <= sizes[None, :]) & (sizes[None, :] > t)
        out += prob @ running.astype(np.float64)
    return out


def _group_prior(like: Array, weight: Array, pooled: Array, warm: Array | None) -> Array:
    return _fit(
        like,
        weight,
        pooled if warm is None else warm,
        GROUP_ITERATIONS if warm is None else GROUP_ITERATIONS_WARM,
        pooled,
        SHRINKAGE,
    )
