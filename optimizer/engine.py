"""The round loop shared by every method: pull, estimate, halve.

A :class:`Run` owns the budget accounting (exact, in samples), the answer coding
(per query, the gold answer is code 0), the estimator and the sampler. Methods in
:mod:`optimizer.methods` compose its two moves: :meth:`Run.spend` (draw pulls) and
:meth:`Run.halving` (successive halving of each tier's active arms).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from optimizer.estimators import Estimate, Estimator, EstimatorConfig, Pooled, Pull, make_estimator
from optimizer.plan import allocate, rounds_for
from optimizer.sampling import SampleBatch, Sampler
from policies.aggregate import weight_vector
from policies.errors import BudgetError
from policies.tiers import Tier

__all__ = ["Mask", "Progress", "Run"]

logger = logging.getLogger(__name__)

Progress = Callable[[int], None]
POOLED = Pooled()
Mask = npt.NDArray[np.bool_]


class Run:
    """One optimisation run over ``sampler``: arms are (prompt, N) for N in 1..k_max.

    ``estimator``: which estimator values the arms (:data:`EstimatorConfig`); with
    ``objectives`` the task is Best-of-N, else majority vote. ``paired``: pulls of one
    round use the same query sequence for every prompt (common random numbers) and
    walk a shuffled query order, instead of an independent random query per pull.
    """

    def __init__(
        self,
        sampler: Sampler,
        tiers: Sequence[Tier],
        k_max: int,
        budget: int,
        rng: np.random.Generator,
        *,
        estimator: EstimatorConfig = POOLED,
        paired: bool = True,
        objectives: Sequence[str] | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.sampler, self.tiers, self.k_max, self.budget = sampler, tuple(tiers), k_max, budget
        self.rng, self.paired, self.progress = rng, paired, progress
        self.num_prompts, self.num_queries = sampler.num_prompts, sampler.num_queries
        self.spent = self.cached = 0
        self.rounds_scaled = 0
        weights = [t.cost_weight for t in self.tiers]
        self.objective_weights = (
            None
            if objectives is None
            else np.stack([weight_vector(objectives, t.objective_weights) for t in self.tiers])
        )
        self.estimator_config = estimator
        self.estimator = self._new_estimator()
        self._vocab: list[dict[str, int]] = [{} for _ in range(self.num_queries)]
        for q, gold in enumerate(sampler.golds):
            if gold is not None:
                self._vocab[q][gold] = 0
        self._draws: dict[tuple[int, int], int] = {}
        # Best-of-N: every (T, n) block of weighted scores per (prompt, query), kept for
        # the threshold rule (which needs each query's reward distribution, whatever the
        # estimator; a reset of the estimates keeps them: they are valid draws).
        self._scores: dict[tuple[int, int], list[npt.NDArray[np.float64]]] = {}
        self._query_order = rng.permutation(self.num_queries)
        self._query_cursor = 0
        self.cost_weights = np.asarray(weights, dtype=np.float64)

    @property
    def best_of_n(self) -> bool:
        """Whether samples are scored by reward (Best-of-N), not voted on."""
        return self.objective_weights is not None

    def _new_estimator(self) -> Estimator:
        return make_estimator(
            self.estimator_config,
            self.num_prompts,
            self.k_max,
            [t.cost_weight for t in self.tiers],
            best_of_n=self.best_of_n,
            stops=[t.stop_rule for t in self.tiers],
        )

    def reset_estimates(self) -> None:
        """Forget the samples drawn so far (they stay spent)."""
        self.estimator = self._new_estimator()

    @property
    def remaining(self) -> int:
        return self.budget - self.spent

    def all_arms(self) -> Mask:
        """(T, P, K): every arm a tier allows (its ``max_n`` caps N)."""
        mask = np.ones((len(self.tiers), self.num_prompts, self.k_max), dtype=bool)
        for t, tier in enumerate(self.tiers):
            mask[t, :, tier.cap_n(self.k_max) :] = False
        return mask

    # -- sampling ---------------------------------------------------------------

    def _queries(self, pulls: Sequence[tuple[int, int]]) -> list[int]:
        if not self.paired:
            return [int(q) for q in self.rng.integers(self.num_queries, size=len(pulls))]
        slot: dict[int, int] = {}
        for p, _ in pulls:
            slot[p] = slot.get(p, 0) + 1
        needed = max(slot.values(), default=0)
        stream = []
        for _ in range(needed):
            if self._query_cursor == self.num_queries:
                self._query_order = self.rng.permutation(self.num_queries)
                self._query_cursor = 0
            stream.append(int(self._query_order[self._query_cursor]))
            self._query_cursor += 1
        seen: dict[int, int] = {}
        queries = []
        for p, _ in pulls:
            queries.append(stream[seen.get(p, 0)])
            seen[p] = seen.get(p, 0) + 1
        return queries

    def _code(self, query: int, answer: str | None) -> int:
        if answer is None:
            return -1
        vocab = self._vocab[query]
        code = vocab.get(answer)
        if code is None:
            # Gold is code 0; wrong answers count from 1 even when there is no gold.
            code = vocab[answer] = len(vocab) + (0 if 0 in vocab.values() else 1)
        return code

    def _to_pull(self, p: int, q: int, batch: SampleBatch) -> Pull:
        codes = np.fromiter((self._code(q, a) for a in batch.answers), np.int64, len(batch.answers))
        scores = None
        if self.objective_weights is not None:
            rewards = np.asarray(batch.rewards if batch.rewards is not None else [], np.float64)
            rewards = rewards.reshape(len(batch.answers), self.objective_weights.shape[1])
            scores = self.objective_weights @ rewards.T
        return Pull(p, q, codes, np.asarray(batch.costs, dtype=np.float64), scores)

    async def spend(self, pulls: Sequence[tuple[int, int]]) -> None:
        """Draw the pulls ``(prompt, N)`` (each on its own query) and update the estimates."""
        total = sum(n for _, n in pulls)
        if total > self.remaining:
            raise BudgetError(f"pulls of {total} samples exceed the {self.remaining} left")
        queries = self._queries(pulls)
        draws = []
        for (p, n), q in zip(pulls, queries, strict=True):
            draws.append(self._draws.get((p, q), 0))
            self._draws[(p, q)] = draws[-1] + n
        batches = await asyncio.gather(
            *(self._sample(p, q, n, d) for (p, n), q, d in zip(pulls, queries, draws, strict=True))
        )
        drawn = [
            self._to_pull(p, q, b) for (p, _), q, b in zip(pulls, queries, batches, strict=True)
        ]
        for pull in drawn:
            if pull.scores is not None:
                self._scores.setdefault((pull.prompt, pull.query), []).append(pull.scores)
        self.estimator.add(drawn)

    def query_scores(self, tier: int, prompt: int) -> list[npt.NDArray[np.float64]]:
        """Tier ``tier``'s weighted scores of every sample of ``prompt``, one array per
        query it was sampled on (Best-of-N; empty for majority vote)."""
        return [
            np.concatenate([block[tier] for block in blocks])
            for (p, _), blocks in self._scores.items()
            if p == prompt
        ]

    async def _sample(self, p: int, q: int, n: int, draw: int) -> SampleBatch:
        batch = await self.sampler.sample(p, q, n, draw=draw)
        if len(batch.answers) != n:
            raise BudgetError(f"sampler returned {len(batch.answers)} samples, {n} were asked")
        self.spent += n
        self.cached += batch.cached
        if self.progress is not None:
            self.progress(n)
        return batch

    # -- decisions --------------------------------------------------------------

    def ranking(self, estimate: Estimate) -> npt.NDArray[np.float64]:
        """(T, P, K) values to rank arms by: unobserved N take the quality of the prompt's
        largest observed N (flat extrapolation); never-sampled prompts rank +inf so they
        are not dropped unseen."""
        quality = estimate.quality
        k = np.arange(self.k_max)
        last = np.maximum.accumulate(np.where(np.isnan(quality), -1, k), axis=-1)
        filled = np.take_along_axis(quality, np.maximum(last, 0), axis=-1)
        filled = np.where(last >= 0, filled, np.inf)
        cost = np.nan_to_num(estimate.cost_per_sample, nan=0.0)
        return filled - self.cost_weights[:, None, None] * cost[None, :, None] * estimate.samples

    def halve(
        self, active: Mask, *, by_prompt: bool = False, keep: Callable[[int], int] | None = None
    ) -> Mask:
        """Each tier keeps the better ⌈n/2⌉ of its active arms (random tie-breaking).

        ``by_prompt``: halve the tier's prompts instead, a prompt valued by its best
        active arm and kept or dropped with all its arms. ``keep(n)``: how many of n
        to keep instead of ⌈n/2⌉.
        """
        kept_of = keep or (lambda n: math.ceil(n / 2))
        values = self.ranking(self.estimator.estimate())
        out = np.zeros_like(active)
        for t in range(active.shape[0]):
            if by_prompt:
                prompts = np.flatnonzero(active[t].any(axis=1))
                best = np.where(active[t], values[t], -np.inf).max(axis=1)[prompts]
                order = np.lexsort((self.rng.random(prompts.size), -best))
                kept = prompts[order[: max(1, kept_of(prompts.size))]]
                out[t, kept] = active[t, kept]
                continue
            arms = np.flatnonzero(active[t])
            if arms.size <= 1:
                out[t].flat[arms] = True
                continue
            v = values[t].ravel()[arms]
            order = np.lexsort((self.rng.random(arms.size), -v))
            out[t].flat[arms[order[: max(1, kept_of(arms.size))]]] = True
        return out

    def shared_finalists(self, active: Mask) -> Mask:
        """(T, P, K): every prompt still active in any tier, with each tier's allowed arms.

        The survivors of all tiers' halvings were sampled on the same queries, so each
        tier may as well choose among all of them: another tier's finalist is a valid,
        well-measured candidate (the tier's own ``max_n`` still caps its N).
        """
        prompts: Mask = np.any(active, axis=(0, 2))
        out: Mask = self.all_arms() & prompts[None, :, None]
        return out

    def select(self, active: Mask) -> list[tuple[int, int]]:
        """Each tier's best active arm as (prompt, N), by estimated utility."""
        utility = self.estimator.estimate().utility
        picks = []
        for t in range(active.shape[0]):
            v = np.where(active[t] & ~np.isnan(utility[t]), utility[t], -np.inf)
            if not np.isfinite(v).any():
                v = np.where(active[t], self.rng.random(active[t].shape), -np.inf)
            p, k = np.unravel_index(int(np.argmax(v)), v.shape)
            picks.append((int(p), int(k) + 1))
        return picks

    def pull_sizes(self, active: Mask, cap: int | None = None) -> npt.NDArray[np.int64]:
        """(P,): each prompt's largest active N over all tiers (0: not active)."""
        any_tier: npt.NDArray[np.bool_] = np.any(active, axis=0)
        pulled = np.any(any_tier, axis=1)
        largest = np.where(pulled, self.k_max - np.argmax(any_tier[:, ::-1], axis=1), 0)
        sizes = np.asarray(largest, dtype=np.int64)
        return np.minimum(sizes, cap) if cap is not None else sizes

    async def halving(
        self,
        active: Mask,
        budget: int,
        *,
        rounds: int | None = None,
        halve: bool = True,
        by_prompt: bool = False,
        pull: int | None = None,
        min_queries: int | None = None,
        wide: tuple[float, int] | None = None,
    ) -> Mask:
        """Successive halving over ``active`` with exactly ``budget`` samples.

        Each round pulls every active prompt at its largest active N, capped at ``pull``
        samples per pull when given, and with ``min_queries`` small enough that each
        active prompt sees that many queries in the round. ``wide=(fraction, size)``:
        each round first spends ``fraction`` of its samples on pulls of up to ``size``
        samples of every active prompt (one smaller pull each when the share is short,
        none below 2 samples a prompt), the rest as usual.
        """
        units = active.any(axis=2).sum(axis=1) if by_prompt else active.sum(axis=(1, 2))
        rounds = rounds or rounds_for(int(units.max()))
        stop_at = self.spent + budget
        for r in range(rounds):
            start, left = self.spent, stop_at - self.spent
            last = r == rounds - 1
            round_budget = left if last else left // (rounds - r)
            sizes = self.pull_sizes(active)
            if wide is not None:
                samples = math.floor(wide[0] * round_budget)
                large = np.minimum(sizes, wide[1])
                pulled = int((large > 0).sum())
                fit = samples // max(pulled, 1)
                if pulled and samples >= int(large.sum()):
                    wide_pulls, _ = allocate(samples, large, self.rng, spend_all=False)
                    await self.spend(wide_pulls)
                elif pulled and fit >= 2:
                    await self.spend([(int(p), int(min(n, fit))) for p, n in enumerate(large) if n])
            if pull is not None:
                sizes = np.minimum(sizes, pull)
            rest = round_budget - (self.spent - start)
            if min_queries is not None:
                fit = rest // max(int((sizes > 0).sum()) * min_queries, 1)
                sizes = np.minimum(sizes, max(1, fit))
            pulls, scaled = allocate(rest, sizes, self.rng, spend_all=last)
            self.rounds_scaled += scaled
            await self.spend(pulls)
            if halve and not last:
                active = self.halve(active, by_prompt=by_prompt)
        return active
