"""The search methods: one registry, one type, each method's plan beside its run.

A :class:`Method` says which estimator values the arms (:data:`EstimatorConfig`),
whether a round's pulls share their queries across prompts, what it will do before it
samples (:meth:`Method.plan`) and does it (:meth:`Method.run`), spending exactly the
run's budget and returning each tier's final candidate arms. Adding a method is one
class here and one line in :data:`METHODS`.

- ``pooled-halving`` (the default): successive halving over each tier's prompts with
  pooled estimators; its pull design and estimator follow the task's strategy
  (:class:`PooledHalving`);
- ``psst``: the paper's PSST (disjoint-block reuse, a random query per pull);
- ``warmup``: the paper's warm-up + Top-K screening, then PSST;
- ``uniform``: every prompt pulled equally at N_max, best arm at the end;
- ``prompt-only``: successive halving over prompts at N=1, deployed at N=1;
- ``disjoint``: prompt-only with half the budget, then the best N for that prompt.

What each measured, and the methods that lost, are in ``bench/README.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from optimizer.engine import Mask, Run
from optimizer.estimators import AveragedEstimator, Blocks, EstimatorConfig, Pooled, VoteEstimator
from optimizer.plan import PhasePlan, Plan, halving_schedule, rounds_for, shares

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "Disjoint",
    "Method",
    "PooledHalving",
    "PromptOnly",
    "Psst",
    "Uniform",
    "Warmup",
]


def _arm_counts(mask: Mask) -> tuple[int, ...]:
    return tuple(int(x) for x in mask.sum(axis=(1, 2)))


@dataclass
class _Planner:
    """Collects a method's phases and warnings as it describes its rounds."""

    run: Run
    phases: list[PhasePlan] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def halving(
        self,
        name: str,
        counts: tuple[int, ...],
        budget: int,
        n: int,
        pulled: int,
        *,
        halve: bool = True,
        rounds: int | None = None,
        pull: int | None = None,
    ) -> None:
        """A halving phase over ``counts`` units per tier, ``pulled`` prompts pulled at
        up to N=``n`` (``pull``: the design's own pull size, if smaller)."""
        r = rounds or rounds_for(max(counts))
        share = shares(budget, r)
        first = share[0] if r > 1 else budget
        size = n if pull is None else min(n, pull)
        per_prompt = first // max(pulled * size, 1)
        if per_prompt == 0:
            fit = first // max(pulled, 1)
            self.warnings.append(
                f"{name}: round 1's share of {first} samples cannot give each of {pulled} "
                f"prompts one pull at N={size} (needs {pulled * size}); "
                + (
                    f"each prompt gets one pull at N={fit} instead, and larger N are ranked "
                    "by extrapolation until observed"
                    if fit >= 1
                    else f"{first} randomly chosen prompts get one sample each instead"
                )
            )
            pulls = (pulled, 1, fit) if fit >= 1 else (first, 1, 1)
        else:
            pulls = (pulled, per_prompt, size)
        self.phases.append(
            PhasePlan(name, budget, tuple(halving_schedule(counts, r, halve)), share, pulls)
        )

    def plan(self, method: str) -> Plan:
        return Plan(method, self.run.budget, tuple(self.phases), tuple(self.warnings))


class Method:
    """A search method. Subclasses set the class attributes and the two moves."""

    name: str = ""
    summary: str = ""
    paired: bool = True  # a round's pulls walk one shared query order

    def estimator(self, best_of_n: bool) -> EstimatorConfig:
        """How arms are valued, for a majority-vote or a Best-of-N task."""
        return Blocks()

    def plan(self, run: Run) -> Plan:
        """What :meth:`run` will do (rounds, arms, shares, round-1 pulls, warnings)."""
        raise NotImplementedError

    async def run(self, run: Run) -> Mask:
        """Spend exactly ``run.remaining`` samples; each tier's final candidate arms."""
        raise NotImplementedError


class PooledHalving(Method):
    """Successive halving over each tier's prompts, pooled estimators (the default).

    A prompt is kept or dropped with all its N, valued by its best N; the finalists of
    all tiers are open to every tier at the end (they were sampled on the same queries).
    Each round spends a share of its samples on *wide* pulls, one per active prompt on
    shared queries, and the rest on *narrow* pulls that cover as many shared queries as
    they can:

    - majority vote: narrow pulls of one sample, wide pulls of 4, the label-symmetric
      empirical-Bayes vote model (wide pulls pin how concentrated wrong answers are);
      N is chosen on the mean of the symmetric and plain models' curves;
    - Best-of-N: narrow pulls of a few samples (the mean score needs many queries), wide
      pulls at the largest active N (the lift E[max of N] − E[score] needs large pulls),
      order-statistics estimator (:class:`~optimizer.estimators.RewardEstimator`).
    """

    name = "pooled-halving"
    summary = "halving over each tier's prompts; pooled estimators; design by strategy"

    # majority vote
    VOTE_NARROW = 1
    VOTE_WIDE = 4
    VOTE_WIDE_SHARE = 0.1
    # Best-of-N
    REWARD_NARROW = 2
    REWARD_WIDE_SHARE = 0.35

    def estimator(self, best_of_n: bool) -> EstimatorConfig:
        return Pooled(symmetric=not best_of_n)

    def _design(self, run: Run) -> tuple[int, int, float]:
        """(narrow pull, wide pull, wide share of each round)."""
        if run.best_of_n:
            return self.REWARD_NARROW, run.k_max, self.REWARD_WIDE_SHARE
        return self.VOTE_NARROW, self.VOTE_WIDE, self.VOTE_WIDE_SHARE

    def plan(self, run: Run) -> Plan:
        narrow, wide, share = self._design(run)
        planner = _Planner(run)
        prompts = run.num_prompts
        planner.halving(
            f"halving over prompts (pulls of {narrow}, {share:.0%} in pulls of up to {wide})",
            (prompts,) * len(run.tiers),
            run.budget,
            run.k_max,
            prompts,
            pull=narrow,
        )
        return planner.plan(self.name)

    async def run(self, run: Run) -> Mask:
        narrow, wide, share = self._design(run)
        active = await run.halving(
            run.all_arms(), run.remaining, by_prompt=True, pull=narrow, wide=(share, wide)
        )
        if isinstance(run.estimator, VoteEstimator):
            # From mostly single samples the symmetric curves rise a little too fast,
            # the plain ones far too slowly: N is chosen on their mean.
            run.estimator = AveragedEstimator(
                [run.estimator, run.estimator.remodel(symmetric=False)]
            )
        return run.shared_finalists(active)


class Psst(Method):
    """The paper's PSST: halving over (prompt, N) arms, each prompt pulled at its largest
    active N on a random query, every pull split into disjoint blocks for every k."""

    name = "psst"
    summary = "PSST, disjoint-block reuse (the paper)"
    paired = False

    def plan(self, run: Run) -> Plan:
        planner = _Planner(run)
        planner.halving("psst", _arm_counts(run.all_arms()), run.budget, run.k_max, run.num_prompts)
        return planner.plan(self.name)

    async def run(self, run: Run) -> Mask:
        return await run.halving(run.all_arms(), run.remaining)


class Warmup(Method):
    """The paper's warm-up + Top-K variant: a share ρ of the budget on N=1 samples of
    every prompt, each tier keeps its top K prompts, PSST on their arms with the rest.
    The warm-up samples are discarded afterwards, as the authors' code does."""

    name = "warmup"
    summary = "warm-up ρ at N=1 + Top-K, then PSST (paper)"
    paired = False
    SHARE = 0.2
    TOP_K = 4

    def plan(self, run: Run) -> Plan:
        planner = _Planner(run)
        prompts, tiers = run.num_prompts, len(run.tiers)
        warm = math.floor(self.SHARE * run.budget)
        planner.phases.append(
            PhasePlan(
                "warm-up at N=1",
                warm,
                ((prompts,) * tiers,),
                (warm,),
                (prompts, warm // max(prompts, 1), 1),
            )
        )
        k = min(self.TOP_K, prompts)
        counts = tuple(k * int(a) for a in run.all_arms()[:, 0, :].sum(axis=1))
        pulled = min(prompts, k * tiers)  # at most: tiers may share top prompts
        planner.halving(f"psst on top {k}", counts, run.budget - warm, run.k_max, pulled)
        return planner.plan(self.name)

    async def run(self, run: Run) -> Mask:
        warm = math.floor(self.SHARE * run.budget)
        await run.halving(_n1(run), warm, rounds=1, halve=False)
        utility = run.ranking(run.estimator.estimate())[:, :, 0]  # (T, P) at N=1
        allowed = run.all_arms()
        active = np.zeros_like(allowed)
        for t in range(len(run.tiers)):
            order = np.lexsort((run.rng.random(run.num_prompts), -utility[t]))
            active[t, order[: self.TOP_K]] = allowed[t, order[: self.TOP_K]]
        run.reset_estimates()
        return await run.halving(active, run.remaining)


class Uniform(Method):
    """Every prompt pulled equally at N_max; the best arm at the end."""

    name = "uniform"
    summary = "all prompts pulled equally at N_max"
    paired = False

    def plan(self, run: Run) -> Plan:
        planner = _Planner(run)
        arms = _arm_counts(run.all_arms())
        planner.halving(
            "uniform", arms, run.budget, run.k_max, run.num_prompts, halve=False, rounds=1
        )
        return planner.plan(self.name)

    async def run(self, run: Run) -> Mask:
        return await run.halving(run.all_arms(), run.remaining, rounds=1, halve=False)


class PromptOnly(Method):
    """Successive halving over prompts at N=1, deployed at N=1 (prompt tuning alone)."""

    name = "prompt-only"
    summary = "halving over prompts at N=1"
    paired = False

    def plan(self, run: Run) -> Plan:
        planner = _Planner(run)
        counts = (run.num_prompts,) * len(run.tiers)
        planner.halving("prompt-only", counts, run.budget, 1, run.num_prompts)
        return planner.plan(self.name)

    async def run(self, run: Run) -> Mask:
        return await run.halving(_n1(run), run.remaining)


class Disjoint(Method):
    """Prompt-only with half the budget, then the best N for that prompt (disjoint tuning)."""

    name = "disjoint"
    summary = "prompt-only, then best N for that prompt"
    paired = False

    def plan(self, run: Run) -> Plan:
        planner = _Planner(run)
        first = run.budget // 2
        prompts = run.num_prompts
        planner.halving("prompt-only", (prompts,) * len(run.tiers), first, 1, prompts)
        counts = tuple(int(a) for a in run.all_arms()[:, 0, :].sum(axis=1))
        planner.halving("best N", counts, run.budget - first, run.k_max, len(run.tiers))
        return planner.plan(self.name)

    async def run(self, run: Run) -> Mask:
        chosen = await run.halving(_n1(run), run.remaining // 2)
        active = np.zeros_like(chosen)
        allowed = run.all_arms()
        for t, (p, _) in enumerate(run.select(chosen)):
            active[t, p] = allowed[t, p]
        return await run.halving(active, run.remaining)


def _n1(run: Run) -> Mask:
    mask = np.zeros((len(run.tiers), run.num_prompts, run.k_max), dtype=bool)
    mask[:, :, 0] = True
    return mask


METHODS: dict[str, Method] = {
    m.name: m for m in (PooledHalving(), Psst(), Warmup(), Uniform(), PromptOnly(), Disjoint())
}
DEFAULT_METHOD = PooledHalving.name
