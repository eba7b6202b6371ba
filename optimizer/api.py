"""The programmatic entry point: :func:`optimize`.

task = replay_task(table, tiers=DEFAULT_TIERS)
result = await optimize(task, ReplaySampler(table, rng), 1000, rng)
save_policy(result.policy, "math.json")
"""

from __future__ import annotations

import logging

import numpy as np

from optimizer.engine import Progress, Run
from optimizer.methods import DEFAULT_METHOD, METHODS
from optimizer.plan import Plan
from optimizer.result import OptimizationResult, build_result
from optimizer.sampling import Sampler
from policies.errors import BudgetError, ConfigError
from policies.extract import ExtractorSpec
from policies.reward import RewardSpec
from policies.table import AnyTable, BestOfNTable, replay_prompt_texts
from policies.tasks import PromptCandidate, TaskSpec
from policies.tiers import DEFAULT_TIERS, Tier

__all__ = ["DEFAULT_METHOD", "REPLAY_REWARD_URL", "make_run", "optimize", "replay_task"]

logger = logging.getLogger(__name__)

REPLAY_REWARD_URL = "http://127.0.0.1:8900/v1/reward"
"""Where ``iapo simulate --replay TABLE`` serves a Best-of-N table's scores by default."""


def replay_task(
    table: AnyTable,
    *,
    name: str = "replay",
    tiers: tuple[Tier, ...] = DEFAULT_TIERS,
    n_max: int = 32,
    reward_url: str = REPLAY_REWARD_URL,
) -> TaskSpec:
    """A task over a recorded table: prompt ids are ``"0"``, ``"1"``, … and their texts are
    :func:`policies.table.replay_prompt_texts`, the ones ``iapo simulate --replay`` knows.

    A majority table gives a majority-vote task whose answers are read with the ``boxed``
    extractor (what the simulator's replies end in). A Best-of-N table gives a ``best_of_n``
    task scored on the table's objectives through the iapo reward contract at
    ``reward_url``: the optimizer never calls it (a replayed sample carries its scores),
    the proxy does (``iapo simulate --replay`` serves it; a proxy config may rebind it).
    Tiers without objective weights weight the objectives equally.
    """
    prompts = tuple(
        PromptCandidate(id=str(p), text=text) for p, text in enumerate(replay_prompt_texts(table))
    )
    names = [t.name for t in tiers]
    default = "standard" if "standard" in names else names[0]
    try:
        if isinstance(table, BestOfNTable):
            return TaskSpec(
                name=name,
                prompts=prompts,
                strategy="best_of_n",
                reward=RewardSpec(url=reward_url, objectives=table.objectives),
                tiers=tiers,
                n_max=n_max,
                default_tier=default,
            )
        return TaskSpec(
            name=name,
            prompts=prompts,
            extractor=ExtractorSpec(kind="boxed"),
            tiers=tiers,
            n_max=n_max,
            default_tier=default,
        )
    except ValueError as exc:  # e.g. a tier weighting an objective the table lacks
        raise ConfigError(str(exc)) from None


def make_run(
    task: TaskSpec,
    sampler: Sampler,
    budget: int,
    rng: np.random.Generator,
    *,
    method: str = DEFAULT_METHOD,
    progress: Progress | None = None,
) -> tuple[Run, Plan]:
    """A run and its plan, before anything is sampled (so a CLI can print the plan)."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if budget < 1:
        raise BudgetError(f"the budget must be at least one sample, got {budget}")
    if sampler.num_prompts != len(task.prompts):
        raise ConfigError(
            f"the sampler has {sampler.num_prompts} prompts, the task {len(task.prompts)}"
        )
    spec = METHODS[method]
    best_of_n = task.strategy == "best_of_n"
    run = Run(
        sampler,
        task.tiers,
        task.n_max,
        budget,
        rng,
        estimator=spec.estimator(best_of_n),
        paired=spec.paired,
        objectives=task.reward.objectives if best_of_n and task.reward else None,
        progress=progress,
    )
    return run, spec.plan(run)


async def optimize(
    task: TaskSpec,
    sampler: Sampler,
    budget: int,
    rng: np.random.Generator,
    *,
    method: str = DEFAULT_METHOD,
    progress: Progress | None = None,
    seed: int | None = None,
    source: str | None = None,
    run: tuple[Run, Plan] | None = None,
) -> OptimizationResult:
    """Find each tier's best (prompt, N) spending at most ``budget`` samples.

    ``progress(n)`` is called as samples arrive. Pass ``run=make_run(...)`` to reuse a
    run whose plan was already shown.
    """
    current, plan = run or make_run(task, sampler, budget, rng, method=method, progress=progress)
    if run is None:  # a caller that made the run has shown the plan and its warnings
        for line in plan.warnings:
            logger.warning("%s", line)
    active = await METHODS[method].run(current)
    if current.spent > budget:  # the engine refuses pulls past the budget; belt and braces
        raise BudgetError(f"spent {current.spent} samples of a budget of {budget}")
    picks = current.select(active)
    return build_result(
        task,
        current.estimator.estimate(),
        picks,
        plan,
        spent=current.spent,
        cached=current.cached,
        method=method,
        seed=seed,
        source=source,
        query_scores=current.query_scores,
    )
