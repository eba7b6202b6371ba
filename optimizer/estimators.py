"""Estimators of every arm's utility from the samples drawn so far, and their configuration.

- :class:`BlockEstimator` is plain PSST: a pull of n samples yields ⌊n/k⌋ disjoint
  blocks for every k ≤ n, each one observation of arm (p, k).
- :class:`VoteEstimator` (majority vote) pools every sample of (prompt, query) across
  pulls and rounds and estimates each query's N-sample majority-vote credit from them
  with an empirical-Bayes model of answer distributions (:mod:`optimizer._bayes`), then
  averages over queries. Same samples, more information per sample.
- :class:`RewardEstimator` (Best-of-N) pools the same way and values a prompt by its
  mean score plus its lift E[max of N] − E[score], from order statistics
  (:mod:`optimizer._reward`), so it sees past the size of its pulls.

A method names its estimator with a typed :data:`EstimatorConfig` (:class:`Blocks` or
:class:`Pooled`); :func:`make_estimator` builds the one that fits the task's strategy.
All report utilities (T, P, K) with NaN where an arm has no estimate yet.

Cost is priced by the samples a request is expected to draw under its tier's stopping
rule (``stops``): N without one; with majority-vote early stopping, the vote model's
expected stopping time (:func:`optimizer._bayes.samples_table`), so a large N that
usually stops early is not priced as if every sample were drawn.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from optimizer._bayes import EM_ITERATIONS, _credit_table, eb_fit, samples_table
from optimizer._kernels import block_credit
from optimizer._reward import extend_lift, max_ustat_rows
from policies.stopping import StopRule

__all__ = [
    "AveragedEstimator",
    "BlockEstimator",
    "Blocks",
    "Estimate",
    "Estimator",
    "EstimatorConfig",
    "Pooled",
    "Pull",
    "RewardEstimator",
    "VoteEstimator",
    "make_estimator",
]

Array = npt.NDArray[np.float64]

# A refit after a round starts from the last prior, which is already close.
EB_ITERATIONS_WARM = 100


@dataclass(frozen=True, slots=True)
class Blocks:
    """Plain PSST: every pull split into disjoint blocks, one observation of (p, k) each."""


@dataclass(frozen=True, slots=True)
class Pooled:
    """Every sample of a (prompt, query) pooled across pulls and rounds.

    Majority vote (:class:`VoteEstimator`): ``symmetric`` scores vote summaries with the
    label-symmetric likelihood (right when most pulls are single samples). Best-of-N:
    :class:`RewardEstimator`.
    """

    symmetric: bool = False


EstimatorConfig = Blocks | Pooled


@dataclass(frozen=True, slots=True)
class Pull:
    """The samples of one pull. ``codes`` (n,): answer codes, 0 = gold, -1 = no answer;
    ``costs`` (n,); ``scores`` (T, n): Best-of-N weighted reward per tier, else None."""

    prompt: int
    query: int
    codes: npt.NDArray[np.int64]
    costs: Array
    scores: Array | None = None


@dataclass(frozen=True, slots=True)
class Estimate:
    """``utility``, ``stderr``, ``quality``: (T, P, K); ``observations``: (P, K);
    ``samples`` (T, P, K): the samples one request of the arm is expected to draw."""

    utility: Array
    stderr: Array
    quality: Array
    cost_per_sample: Array
    observations: npt.NDArray[np.int64]
    samples: Array


class Estimator:
    """Common state: cost per sample of each prompt, tier cost weights and stopping rules
    (``stops``, one per tier; None: every tier draws all N)."""

    def __init__(
        self,
        num_prompts: int,
        k_max: int,
        cost_weights: Sequence[float],
        stops: Sequence[StopRule] | None = None,
    ) -> None:
        self.num_prompts, self.k_max = num_prompts, k_max
        self.cost_weights = np.asarray(cost_weights, dtype=np.float64)
        self.stops = tuple(stops) if stops is not None else (StopRule(),) * len(cost_weights)
        if len(self.stops) != len(self.cost_weights):
            raise ValueError("one stopping rule per tier")
        self._cost_sum = np.zeros(num_prompts)
        self._samples = np.zeros(num_prompts, dtype=np.int64)

    def add(self, pulls: Sequence[Pull]) -> None:
        for pull in pulls:
            self._cost_sum[pull.prompt] += float(pull.costs.sum())
            self._samples[pull.prompt] += pull.codes.size
        self._add(pulls)

    def _add(self, pulls: Sequence[Pull]) -> None:
        raise NotImplementedError

    def cost_per_sample(self) -> Array:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(
                self._samples > 0, self._cost_sum / np.maximum(self._samples, 1), np.nan
            )

    def estimate(self) -> Estimate:
        raise NotImplementedError

    def expected_samples(self) -> Array:
        """(T, P, K) samples one request is expected to draw: N unless a subclass knows
        better under the tier's stopping rule."""
        k = np.arange(1, self.k_max + 1, dtype=np.float64)
        return np.broadcast_to(k, (len(self.cost_weights), self.num_prompts, self.k_max)).copy()

    def _finish(
        self, quality: Array, stderr: Array, observations: npt.NDArray[np.int64]
    ) -> Estimate:
        samples = self.expected_samples()
        cost = self.cost_weights[:, None, None] * self.cost_per_sample()[None, :, None] * samples
        return Estimate(
            utility=quality - cost,
            stderr=stderr,
            quality=quality,
            cost_per_sample=self.cost_per_sample(),
            observations=observations,
            samples=samples,
        )


def make_estimator(
    config: EstimatorConfig,
    num_prompts: int,
    k_max: int,
    cost_weights: Sequence[float],
    *,
    best_of_n: bool,
    stops: Sequence[StopRule] | None = None,
) -> Estimator:
    """The estimator ``config`` names, for a majority-vote or a Best-of-N task; ``stops``:
    each tier's stopping rule, which prices its arms."""
    if isinstance(config, Blocks):
        return BlockEstimator(num_prompts, k_max, cost_weights, stops)
    if best_of_n:
        return RewardEstimator(num_prompts, k_max, cost_weights, stops)
    return VoteEstimator(num_prompts, k_max, cost_weights, stops, symmetric=config.symmetric)


class _PairPool(Estimator):
    """Samples pooled per (prompt, query) pair; subclasses turn pairs into curves."""

    def __init__(
        self,
        num_prompts: int,
        k_max: int,
        cost_weights: Sequence[float],
        stops: Sequence[StopRule] | None = None,
    ) -> None:
        super().__init__(num_prompts, k_max, cost_weights, stops)
        self._dirty: set[int] = set()
        self._pair: dict[tuple[int, int], int] = {}
        self._pair_prompt: list[int] = []
        self._pair_query: list[int] = []

    def _index(self, pull: Pull) -> int:
        key = (pull.prompt, pull.query)
        index = self._pair.get(key)
        if index is None:
            index = self._pair[key] = len(self._pair_prompt)
            self._pair_prompt.append(pull.prompt)
            self._pair_query.append(pull.query)
            self._new_pair()
        self._dirty.add(index)
        return index

    def _new_pair(self) -> None:
        raise NotImplementedError

    def _membership(self) -> tuple[Array, Array]:
        """(P, pairs) 0/1 membership of each pair in its prompt, and pairs per prompt (P,)."""
        prompts = np.asarray(self._pair_prompt, dtype=np.int64)
        member = np.zeros((self.num_prompts, len(prompts)))
        member[prompts, np.arange(len(prompts))] = 1.0
        return member, member.sum(axis=1)


class BlockEstimator(Estimator):
    """Plain PSST: disjoint blocks of each pull, one observation of (p, k) each."""

    def __init__(
        self,
        num_prompts: int,
        k_max: int,
        cost_weights: Sequence[float],
        stops: Sequence[StopRule] | None = None,
    ) -> None:
        super().__init__(num_prompts, k_max, cost_weights, stops)
        tiers = len(self.cost_weights)
        self._n = np.zeros((num_prompts, k_max), dtype=np.int64)
        self._q = np.zeros((tiers, num_prompts, k_max))
        self._q2 = np.zeros((tiers, num_prompts, k_max))

    def _add(self, pulls: Sequence[Pull]) -> None:
        by_size: dict[int, list[Pull]] = {}
        for pull in pulls:
            by_size.setdefault(pull.codes.size, []).append(pull)
        tiers = len(self.cost_weights)
        for n, group in by_size.items():
            prompts = np.array([p.prompt for p in group])
            codes = np.stack([p.codes for p in group])
            width = max(int(codes.max()) + 1, 1)
            scores = None
            if group[0].scores is not None:
                scores = np.stack([p.scores for p in group if p.scores is not None], axis=1)
            for k in range(1, min(n, self.k_max) + 1):
                blocks = n // k
                if scores is None:
                    quality = np.broadcast_to(
                        block_credit(codes, k, width), (tiers, len(group), blocks)
                    )
                else:
                    quality = scores[:, :, : blocks * k].reshape(tiers, len(group), blocks, k)
                    quality = np.nan_to_num(quality.max(axis=3), nan=0.0)
                np.add.at(self._n[:, k - 1], prompts, blocks)
                for t in range(tiers):
                    np.add.at(self._q[t, :, k - 1], prompts, quality[t].sum(axis=1))
                    np.add.at(self._q2[t, :, k - 1], prompts, (quality[t] ** 2).sum(axis=1))

    def estimate(self) -> Estimate:
        n = self._n[None].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            quality = np.where(n > 0, self._q / np.maximum(n, 1), np.nan)
            var = np.where(n > 1, (self._q2 / np.maximum(n, 1) - quality**2) * n / (n - 1), np.nan)
            stderr = np.sqrt(np.maximum(var, 0.0) / np.maximum(n, 1))
        return self._finish(quality, stderr, self._n.copy())


class VoteEstimator(_PairPool):
    """Majority vote: all samples of (prompt, query) pooled; per-query N-sample credit
    from the empirical-Bayes model (:mod:`optimizer._bayes`), averaged over queries.

    ``symmetric``: the label-symmetric likelihood, which does not mistake a lone wrong
    vote for a concentrated wrong answer (right when most pulls are single samples).
    """

    def __init__(
        self,
        num_prompts: int,
        k_max: int,
        cost_weights: Sequence[float],
        stops: Sequence[StopRule] | None = None,
        *,
        symmetric: bool = False,
    ) -> None:
        super().__init__(num_prompts, k_max, cost_weights, stops)
        self.symmetric = symmetric
        self._prior: Array | None = None
        self._group_priors: dict[int, Array] = {}
        self._votes: list[dict[int, int]] = []  # per pair: code -> votes
        self._none: list[int] = []
        self._curves = np.zeros((0, k_max))
        self._stop_samples = np.zeros((0, k_max))  # per pair: samples drawn, stopping early

    def _new_pair(self) -> None:
        self._votes.append({})
        self._none.append(0)

    def _add(self, pulls: Sequence[Pull]) -> None:
        for pull in pulls:
            index = self._index(pull)
            votes = self._votes[index]
            # Pulls are a few samples each: a Python tally beats np.unique's sort.
            for code in pull.codes.tolist():
                if code < 0:
                    self._none[index] += 1
                else:
                    votes[code] = votes.get(code, 0) + 1

    def _refresh(self) -> None:
        """Refit the prior and every pair's curve (the prior moves with every sample)."""
        if not self._dirty:
            return
        self._dirty = set()
        pairs = len(self._pair_prompt)
        width = max(max((max(v, default=0) for v in self._votes), default=0) + 1, 1)
        counts = np.zeros((pairs, width), dtype=np.int64)
        for row, votes in enumerate(self._votes):
            for code, count in votes.items():
                counts[row, code] = count
        none = np.asarray(self._none, dtype=np.int64)
        warm = self._prior is not None
        fit = eb_fit(
            counts,
            none,
            np.asarray(self._pair_prompt, dtype=np.int64),
            self._prior,
            EB_ITERATIONS_WARM if warm else EM_ITERATIONS,
            self._group_priors,
            symmetric=self.symmetric,
        )
        self._prior = fit.pooled
        self._curves = fit.mean(_credit_table(self.k_max))
        if any(stop.stops_early for stop in self.stops):
            self._stop_samples = fit.mean(samples_table(self.k_max, stops_early=True))

    def remodel(self, *, symmetric: bool) -> VoteEstimator:
        """A copy over the same samples with the other likelihood, fitted afresh."""
        other = copy.deepcopy(self)
        other.symmetric, other._prior, other._group_priors = symmetric, None, {}
        other._dirty = set(range(len(other._pair_prompt)))
        return other

    def expected_samples(self) -> Array:
        """N, or for a tier that stops early the mean over a prompt's sampled queries of
        each one's posterior-mean stopping time (N for a prompt not sampled yet)."""
        samples = super().expected_samples()
        if not any(stop.stops_early for stop in self.stops):
            return samples
        self._refresh()
        member, pairs = self._membership()
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (member @ self._stop_samples) / np.maximum(pairs, 1)[:, None]
        sampled = np.broadcast_to(pairs[:, None] > 0, mean.shape)
        for t, stop in enumerate(self.stops):
            if stop.stops_early:
                samples[t] = np.where(sampled, mean, samples[t])
        return samples

    def estimate(self) -> Estimate:
        self._refresh()
        member, pairs = self._membership()
        tiers, k = len(self.cost_weights), self.k_max
        n = pairs[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0, (member @ self._curves) / np.maximum(n, 1), np.nan)
            second = (member @ self._curves**2) / np.maximum(n, 1)
            var = np.where(n > 1, (second - mean**2) * n / (n - 1), np.nan)
            stderr = np.sqrt(np.maximum(var, 0.0) / np.maximum(n, 1))
        # Majority credit is the same in every tier; only the cost term differs.
        quality = np.broadcast_to(mean[None], (tiers, self.num_prompts, k)).copy()
        stderr = np.broadcast_to(stderr[None], (tiers, self.num_prompts, k)).copy()
        observations = np.repeat(pairs.astype(np.int64)[:, None], k, axis=1)
        return self._finish(quality, stderr, observations)


class RewardEstimator(_PairPool):
    """Best-of-N: all scored samples of (prompt, query) pooled, per tier.

    A prompt's quality at N is its mean score over every pair sampled plus its lift
    E[max of N] − E[score], averaged over the pairs with at least N samples (the
    unbiased order-statistics estimator of each pair's best of N) and continued past
    the largest N measured (:func:`optimizer._reward.extend_lift`).
    """

    def __init__(
        self,
        num_prompts: int,
        k_max: int,
        cost_weights: Sequence[float],
        stops: Sequence[StopRule] | None = None,
    ) -> None:
        super().__init__(num_prompts, k_max, cost_weights, stops)
        tiers = len(self.cost_weights)
        self._scores: list[list[Array]] = []  # per pair: (T, n) score blocks
        self._sizes: list[int] = []
        self._curves = np.zeros((0, tiers, k_max))  # NaN past the pair's sample count

    def _new_pair(self) -> None:
        self._scores.append([])
        self._sizes.append(0)

    def _add(self, pulls: Sequence[Pull]) -> None:
        for pull in pulls:
            if pull.scores is None:
                raise ValueError("a Best-of-N pull needs scores")
            index = self._index(pull)
            self._scores[index].append(pull.scores)
            self._sizes[index] += pull.scores.shape[1]

    def _refresh(self) -> None:
        if not self._dirty:
            return
        touched, self._dirty = sorted(self._dirty), set()
        tiers = len(self.cost_weights)
        grown = np.full((len(self._pair_prompt), tiers, self.k_max), np.nan)
        grown[: self._curves.shape[0]] = self._curves
        self._curves = grown
        by_size: dict[int, list[int]] = {}
        for i in touched:
            by_size.setdefault(self._sizes[i], []).append(i)
        for m, rows in by_size.items():
            scores = np.stack([np.concatenate(self._scores[i], axis=1) for i in rows])
            curve = max_ustat_rows(scores.reshape(len(rows) * tiers, m), self.k_max)
            self._curves[rows, :, : curve.shape[1]] = curve.reshape(len(rows), tiers, -1)

    def estimate(self) -> Estimate:
        self._refresh()
        member, pairs = self._membership()
        tiers, p, k = len(self.cost_weights), self.num_prompts, self.k_max
        curves = self._curves
        means = curves[:, :, 0]  # (pairs, T): each pair's mean score
        lifts = curves - curves[:, :, :1]
        has = np.isfinite(lifts[:, 0, :]).astype(np.float64)  # (pairs, K)
        lifts = np.nan_to_num(lifts, nan=0.0)
        n = pairs[:, None]
        counts = member @ has  # (P, K): pairs with at least N samples
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (member @ means) / np.maximum(n, 1)  # (P, T)
            mean_var = ((member @ means**2) / np.maximum(n, 1) - mean**2) * n / np.maximum(n - 1, 1)
            flat = lifts.reshape(len(means), tiers * k)
            lift = (member @ flat).reshape(p, tiers, k) / np.maximum(counts, 1)[:, None, :]
            lift2 = (member @ flat**2).reshape(p, tiers, k) / np.maximum(counts, 1)[:, None, :]
            c = counts[:, None, :]
            lift_var = (lift2 - lift**2) * c / np.maximum(c - 1, 1)
        measured = np.where(counts > 0, np.arange(1, k + 1)[None, :], 0).max(axis=1)  # (P,)
        lift = extend_lift(lift.reshape(p * tiers, k), np.repeat(measured, tiers)).reshape(
            p, tiers, k
        )
        # Past the measured N, the lift's spread is the last measured one's, widened by
        # half of it per doubling of N (the extrapolation's own uncertainty).
        at_top = np.take_along_axis(lift_var, np.maximum(measured - 1, 0)[:, None, None], axis=2)
        last = np.take_along_axis(counts, np.maximum(measured - 1, 0)[:, None], axis=1)
        sizes = np.arange(1, k + 1)[None, None, :]
        beyond = sizes > measured[:, None, None]
        widen = 1.0 + 0.5 * np.log2(sizes / np.maximum(measured, 1)[:, None, None])
        lift_var = np.where(beyond, at_top * widen**2, lift_var)
        denom = np.where(beyond, last[:, :, None], c)
        quality = mean[:, :, None] + lift
        var = np.maximum(mean_var, 0.0)[:, :, None] / np.maximum(n, 1)[:, :, None]
        var = var + np.maximum(lift_var, 0.0) / np.maximum(denom, 1)
        quality = np.where(n[:, :, None] > 0, quality, np.nan)
        stderr = np.where(n[:, :, None] > 1, np.sqrt(var), np.nan)
        observations = counts.astype(np.int64)
        return self._finish(quality.transpose(1, 0, 2), stderr.transpose(1, 0, 2), observations)


class AveragedEstimator(Estimator):
    """The mean of several estimators' estimates of the same samples (a model average).

    For when each model is biased in a known direction and the truth lies between:
    ``pooled-halving`` chooses N on the mean of the label-symmetric and the plain vote
    model's curves (:class:`~optimizer.methods.PooledHalving`).
    """

    def __init__(self, parts: Sequence[Estimator]) -> None:
        if not parts:
            raise ValueError("an average needs at least one estimator")
        first = parts[0]
        super().__init__(first.num_prompts, first.k_max, first.cost_weights.tolist(), first.stops)
        self._parts = tuple(parts)

    def add(self, pulls: Sequence[Pull]) -> None:
        for part in self._parts:
            part.add(pulls)

    def cost_per_sample(self) -> Array:
        return self._parts[0].cost_per_sample()

    def estimate(self) -> Estimate:
        estimates = [part.estimate() for part in self._parts]
        first = estimates[0]
        return Estimate(
            utility=np.mean([e.utility for e in estimates], axis=0),
            stderr=np.max([e.stderr for e in estimates], axis=0),
            quality=np.mean([e.quality for e in estimates], axis=0),
            cost_per_sample=first.cost_per_sample,
            observations=first.observations,
            samples=np.mean([e.samples for e in estimates], axis=0),
        )
