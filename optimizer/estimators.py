"""Estimators of every arm's utility from the samples drawn so far.

- :class:`BlockEstimator` is plain PSST: a pull of n samples yields ⌊n/k⌋ disjoint
  blocks for every k ≤ n, each one observation of arm (p, k).
- :class:`PooledEstimator` pools every sample of (prompt, query) across pulls and
  rounds and estimates the N-sample majority-vote credit of each query from them
  (an unbiased U-statistic for N ≤ samples on the query, a Pólya-urn extrapolation
  beyond), then averages over queries. Same samples, more information per sample.

Both report utilities (T, P, K) with NaN where an arm has no estimate yet.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from optimizer._bayes import EM_ITERATIONS, eb_credit
from optimizer._kernels import block_credit, max_ustat, prefix_credit
from optimizer.xprompt import borrowed

__all__ = [
    "AveragedEstimator",
    "BlockEstimator",
    "Estimate",
    "Estimator",
    "PooledEstimator",
    "Pull",
]

Array = npt.NDArray[np.float64]
# Pooled models: empirical Bayes (``-x``: votes borrowed across prompts; ``-s``: the
# label-symmetric likelihood), or the Pólya urn.
MODELS = ("eb", "eb-x", "eb-s", "eb-xs", "urn")


def _check_model(model: str) -> None:
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; use one of {', '.join(MODELS)}")


# A refit after a round starts from the last prior, which is already close.
EB_ITERATIONS_WARM = 100


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
    """``utility``, ``stderr``, ``quality``: (T, P, K); ``observations``: (P, K)."""

    utility: Array
    stderr: Array
    quality: Array
    cost_per_sample: Array
    observations: npt.NDArray[np.int64]


class Estimator:
    """Common state: cost per sample of each prompt, tier cost weights."""

    def __init__(self, num_prompts: int, k_max: int, cost_weights: Sequence[float]) -> None:
        self.num_prompts, self.k_max = num_prompts, k_max
        self.cost_weights = np.asarray(cost_weights, dtype=np.float64)
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

    def _cost_term(self) -> Array:
        """λ_t · k · cost per sample: (T, P, K)."""
        k = np.arange(1, self.k_max + 1)
        return self.cost_weights[:, None, None] * self.cost_per_sample()[None, :, None] * k


class BlockEstimator(Estimator):
    """Plain PSST: disjoint blocks of each pull, one observation of (p, k) each."""

    def __init__(self, num_prompts: int, k_max: int, cost_weights: Sequence[float]) -> None:
        super().__init__(num_prompts, k_max, cost_weights)
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
        return Estimate(
            utility=quality - self._cost_term(),
            stderr=stderr,
            quality=quality,
            cost_per_sample=self.cost_per_sample(),
            observations=self._n.copy(),
        )


class PooledEstimator(Estimator):
    """All samples of (prompt, query) pooled; per-query N-sample credit, averaged.

    ``model="eb-x"``: the same, but each (prompt, query)'s posterior also weighs the
    other prompts' votes on that query, discounted (:mod:`optimizer.xprompt`).
    ``model="eb-s"`` / ``"eb-xs"``: ``eb`` / ``eb-x`` scoring vote summaries with the
    label-symmetric likelihood (:func:`optimizer._bayes._likelihood_sym`), which does
    not mistake a lone wrong vote for a concentrated wrong answer (the estimator of
    ``sh-mixed``, whose pulls are mostly single samples).
    ``model="eb"`` (default): each query's credit at every N is its posterior mean under
    a prior over answer distributions fitted to all queries sampled (empirical Bayes,
    :mod:`optimizer._bayes`). ``model="urn"``: the U-statistic up to the samples seen,
    a Pólya-urn extrapolation beyond (:func:`optimizer._kernels.prefix_credit`).
    Best-of-N always uses the exact U-statistic of the maximum.
    """

    def __init__(
        self,
        num_prompts: int,
        k_max: int,
        cost_weights: Sequence[float],
        rng: np.random.Generator,
        *,
        model: str = "eb",
        sequences: int = 32,
        alpha: float = 0.5,
    ) -> None:
        super().__init__(num_prompts, k_max, cost_weights)
        _check_model(model)
        self._rng, self._sequences, self._alpha, self._model = rng, sequences, alpha, model
        self._dirty: set[int] = set()
        self._prior: Array | None = None
        self._group_priors: dict[int, Array] = {}
        self._pair: dict[tuple[int, int], int] = {}
        self._pair_prompt: list[int] = []
        self._pair_query: list[int] = []
        self._votes: list[dict[int, int]] = []  # per pair: code -> votes
        self._none: list[int] = []
        self._scores: list[list[Array]] = []  # per pair: (T, n) score blocks (Best-of-N)
        self._curves = np.zeros((0, len(self.cost_weights), k_max))

    def _add(self, pulls: Sequence[Pull]) -> None:
        touched: set[int] = set()
        for pull in pulls:
            key = (pull.prompt, pull.query)
            index = self._pair.get(key)
            if index is None:
                index = self._pair[key] = len(self._pair_prompt)
                self._pair_prompt.append(pull.prompt)
                self._pair_query.append(pull.query)
                self._votes.append({})
                self._none.append(0)
                self._scores.append([])
            votes = self._votes[index]
            codes, counts = np.unique(pull.codes, return_counts=True)
            for code, count in zip(codes.tolist(), counts.tolist(), strict=True):
                if code < 0:
                    self._none[index] += count
                else:
                    votes[code] = votes.get(code, 0) + count
            if pull.scores is not None:
                self._scores[index].append(pull.scores)
            touched.add(index)
        self._dirty |= touched

    def _refresh(self) -> None:
        """Compute the curves of queries with new samples (all of them for ``eb``)."""
        touched = self._dirty
        if not touched:
            return
        self._dirty = set()
        tiers = len(self.cost_weights)
        grown = np.zeros((len(self._pair_prompt), tiers, self.k_max))
        grown[: self._curves.shape[0]] = self._curves
        self._curves = grown
        if self._model != "urn" and not self._scores[next(iter(touched))]:
            touched = set(range(len(self._pair_prompt)))  # the prior moved: every posterior
        indices = np.array(sorted(touched))
        if self._scores[indices[0]]:
            for i in indices.tolist():
                scores = np.concatenate(self._scores[i], axis=1)
                for t in range(tiers):
                    self._curves[i, t] = max_ustat(scores[t], self.k_max)
            return
        width = max(max((max(self._votes[i], default=0) for i in indices), default=0) + 1, 1)
        counts = np.zeros((indices.size, width), dtype=np.int64)
        for row, i in enumerate(indices.tolist()):
            for code, count in self._votes[i].items():
                counts[row, code] = count
        none = np.array([self._none[i] for i in indices.tolist()], dtype=np.int64)
        if self._model != "urn":
            warm = self._prior is not None
            groups = np.array([self._pair_prompt[i] for i in indices.tolist()], dtype=np.int64)
            curve, self._prior = eb_credit(
                counts,
                none,
                self.k_max,
                groups,
                self._prior,
                EB_ITERATIONS_WARM if warm else EM_ITERATIONS,
                self._group_priors,
                borrowed(counts, self._pair_query, indices) if "x" in self._model else None,
                symmetric=self._model.endswith("s"),
            )
        else:
            curve = prefix_credit(
                counts, none, self.k_max, self._rng, sequences=self._sequences, alpha=self._alpha
            )
        self._curves[indices] = curve[:, None, :]

    def remodel(self, model: str) -> PooledEstimator:
        """A copy over the same samples with another ``model``, fitted afresh."""
        _check_model(model)
        other = copy.deepcopy(self)
        other._model, other._prior, other._group_priors = model, None, {}
        other._dirty = set(range(len(other._pair_prompt)))
        return other

    def estimate(self) -> Estimate:
        self._refresh()
        tiers, p, k = len(self.cost_weights), self.num_prompts, self.k_max
        prompts = np.asarray(self._pair_prompt, dtype=np.int64)
        pairs = np.bincount(prompts, minlength=p).astype(np.float64)
        flat = self._curves.reshape(len(prompts), tiers * k)
        # (P, pairs) membership times (pairs, T·K) curves: sums per prompt in one product.
        member = np.zeros((p, len(prompts)))
        member[prompts, np.arange(len(prompts))] = 1.0
        total = member @ flat
        total2 = member @ flat**2
        n = pairs[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0, total / np.maximum(n, 1), np.nan)
            var = np.where(n > 1, (total2 / np.maximum(n, 1) - mean**2) * n / (n - 1), np.nan)
            stderr = np.sqrt(np.maximum(var, 0.0) / np.maximum(n, 1))
        quality = mean.reshape(p, tiers, k).transpose(1, 0, 2)
        stderr = stderr.reshape(p, tiers, k).transpose(1, 0, 2)
        observations = np.repeat(pairs.astype(np.int64)[:, None], k, axis=1)
        return Estimate(
            utility=quality - self._cost_term(),
            stderr=stderr,
            quality=quality,
            cost_per_sample=self.cost_per_sample(),
            observations=observations,
        )


class AveragedEstimator(Estimator):
    """The mean of several estimators' estimates of the same samples (a model average).

    For when each model is biased in a known direction and the truth lies between:
    ``sh-mixed`` chooses N on the mean of the label-symmetric and the plain pooled
    curves (:mod:`optimizer.mixed`).
    """

    def __init__(self, parts: Sequence[Estimator]) -> None:
        if not parts:
            raise ValueError("an average needs at least one estimator")
        first = parts[0]
        super().__init__(first.num_prompts, first.k_max, first.cost_weights.tolist())
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
        )
