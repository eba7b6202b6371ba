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
    "PullDesign",
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
        min_queries: int | None = None,
    ) -> None:
        """A halving phase over ``counts`` units per tier, ``pulled`` prompts pulled at
        up to N=``n`` (``pull``, ``min_queries``: the design's own caps, if smaller)."""
        r = rounds or rounds_for(max(counts))
        share = shares(budget, r)
        first = share[0] if r > 1 else budget
        size = n if pull is None else min(n, pull)
        if min_queries:
            size = min(size, max(1, first // max(pulled * min_queries, 1)))
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


@dataclass(frozen=True, slots=True)
class PullDesign:
    """How a halving round spends its samples (see :meth:`Run.halving`): pulls capped at
    ``pull`` samples and at what leaves ``min_queries`` queries per active prompt; first
    a ``wide`` = (share, size) of the round in larger pulls of every active prompt."""

    pull: int | None
    min_queries: int | None
    wide: tuple[float, int] | None

    def describe(self, k_max: int) -> str:
        size = f"pulls of {self.pull}" if self.pull else f"pulls of up to N={k_max}"
        if self.min_queries:
            size += f", at least {self.min_queries} queries per prompt a round"
        if self.wide:
            size += f"; {self.wide[0]:.0%} in pulls of {self.wide[1]}"
        return size


class PooledHalving(Method):
    """Successive halving over each tier's prompts, pooled estimators (the default).

    A prompt is kept or dropped with all its N, valued by its best N; the finalists of
    all tiers are open to every tier at the end (they were sampled on the same queries).
    Every active prompt of a round is pulled on the same queries. The pull design and the
    estimator follow the task's strategy:

    - majority vote: pulls of one sample (the finalists are compared on as many shared
      queries as the budget covers), a tenth of each round in pulls of 4 (they pin how
      concentrated a prompt's wrong answers are), the label-symmetric empirical-Bayes
      vote model (:class:`~optimizer.estimators.VoteEstimator`); N is chosen on the mean
      of the symmetric and plain models' curves;
    - Best-of-N: pulls at the largest N still active (E[max of N] is measured, not
      extrapolated, wherever the budget allows), made smaller when a round could not
      otherwise give each active prompt two queries; the order-statistics estimator with
      lift extrapolation (:class:`~optimizer.estimators.RewardEstimator`).
    """

    name = "pooled-halving"
    summary = "halving over each tier's prompts; pooled estimators; design by strategy"
    VOTES = PullDesign(pull=1, min_queries=None, wide=(0.1, 4))
    REWARDS = PullDesign(pull=None, min_queries=2, wide=None)

    def estimator(self, best_of_n: bool) -> EstimatorConfig:
        return Pooled(symmetric=not best_of_n)

    def design(self, run: Run) -> PullDesign:
        return self.REWARDS if run.best_of_n else self.VOTES

    def plan(self, run: Run) -> Plan:
        design = self.design(run)
        planner = _Planner(run)
        prompts = run.num_prompts
        planner.halving(
            f"halving over prompts ({design.describe(run.k_max)})",
            (prompts,) * len(run.tiers),
            run.budget,
            run.k_max,
            prompts,
            pull=design.pull,
            min_queries=design.min_queries,
        )
        return planner.plan(self.name)

    async def run(self, run: Run) -> Mask:
        design = self.design(run)
        active = await run.halving(
            run.all_arms(),
            run.remaining,
            by_prompt=True,
            pull=design.pull,
            min_queries=design.min_queries,
            wide=design.wide,
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
