"""The methods: PSST (plain and pooled), warm-up + Top-K screening, and the baselines.

Each is a coroutine over a :class:`~optimizer.engine.Run` that spends exactly the
run's budget and returns each tier's final active arms; :func:`plan_method` says
beforehand what it will do.

- ``psst``: the paper's PSST (disjoint-block reuse, a random query per pull);
- ``psst-pooled``: PSST's halving with the pooled empirical-Bayes estimator
  (:mod:`optimizer._bayes`), paired queries (every prompt of a round on the same
  queries) and pull sizes capped so each prompt sees several queries per round;
- ``psst-urn``: the same with the U-statistic + Pólya-urn estimator instead;
- ``sh-pooled`` (the default): halving over each tier's prompts (a prompt kept or
  dropped with all its N, valued by its best N), pooled estimator. On MATH it matches
  ``psst-pooled``; on tables where prompts differ a lot it is more robust, because a
  prompt's arms are not cut one by one on early, noisy rounds;
- ``sh-xprompt``: ``sh-pooled``'s halving in pulls of one sample (each round's
  samples cover as many shared queries as they can), with the ``eb-x`` estimator:
  each (prompt, query)'s posterior also weighs the other prompts' votes on that query,
  discounted (:mod:`optimizer.xprompt`). On MATH (fresh seeds 100-199) 98.6 / 98.9 /
  99.2 / 99.6% at B = 500 / 1000 / 3000 / 10000 against ``sh-pooled``'s 98.0 / 98.3 /
  98.9 / 99.2%; paired over seeds +0.63 ± 0.28 points at B=1000 but +0.29 ± 0.22 at
  B=3000 (within noise), and it needs more budget than ``sh-pooled`` to find a prompt
  that only wins at large N on a table with shared traps: not the default;
- ``sh-mixed``: ``sh-pooled``'s halving with nine tenths of each round in pulls of
  one sample on shared queries and a tenth in pulls of 4 (which pin how concentrated
  wrong answers are), estimated with the label-symmetric likelihood that does not read
  a lone wrong vote as a trap (:mod:`optimizer.mixed`); each tier chooses among all
  tiers' finalists. On MATH (fresh seeds 100-199) 98.8 / 99.0 / 99.3 / 99.9% at
  B = 500 / 1000 / 3000 / 10000 (before the shared finalists 98.7 / 99.0 / 99.2 /
  99.8%): ahead of ``sh-pooled`` at every budget (+0.71 ± 0.28, +0.71 ± 0.25,
  +0.25 ± 0.23, +0.62 ± 0.19 paired),
  level with ``sh-xprompt`` (+0.12 / +0.08 / -0.03 / +0.18, within noise), and
  better than both on the shared-trap table; not the default because Best-of-N tasks
  and live request counts fare worse with single-sample pulls;
- ``sh-screen``: a screening round (20-30% of the budget, pulls of 2 samples of every
  prompt on shared queries) keeps each tier's best quarter of the prompts, then
  ``sh-pooled`` over those (:mod:`optimizer.screening`); ahead of ``sh-pooled`` on
  MATH at B=10000, behind it at B ≤ 1000;
- ``uniform-pooled``: every prompt on the same queries, pooled estimator, no halving;
- ``warmup`` / ``warmup-pooled``: a share ρ of the budget on N=1 over all prompts, keep
  each tier's top K prompts, PSST on their arms (``warmup`` discards the warm-up
  samples afterwards, as the authors' code does; ``warmup-pooled`` keeps them);
- ``prompt-only``: successive halving over prompts at N=1, deployed at N=1;
- ``disjoint``: prompt-only with half the budget, then the best N for that prompt;
- ``uniform``: every prompt pulled equally at N_max, best arm at the end.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from optimizer.engine import Mask, Run
from optimizer.mixed import MIXED_PULL, MIXED_SHARE, mixed_halving
from optimizer.plan import PhasePlan, Plan, halving_schedule, rounds_for, shares
from optimizer.screening import SCREEN_PULL, screen_and_halve, screen_budget, screened

__all__ = ["METHODS", "MethodSpec", "plan_method", "run_method"]


@dataclass(frozen=True, slots=True)
class MethodSpec:
    """How a method samples and estimates."""

    estimator: str
    paired: bool
    description: str


METHODS: dict[str, MethodSpec] = {
    "psst": MethodSpec("blocks", False, "PSST, disjoint-block reuse (the paper)"),
    "psst-pooled": MethodSpec("pooled", True, "PSST halving, pooled empirical-Bayes estimator"),
    "psst-urn": MethodSpec("pooled-urn", True, "PSST halving, pooled U-statistic + Pólya urn"),
    "sh-pooled": MethodSpec("pooled", True, "halving over prompts per tier, pooled estimator"),
    "sh-xprompt": MethodSpec(
        "pooled-x", True, "sh-pooled in small pulls, votes borrowed across prompts"
    ),
    "sh-screen": MethodSpec("pooled", True, "wide screening round, then sh-pooled on the best"),
    "sh-mixed": MethodSpec(
        "pooled-s", True, "halving in single samples plus a few larger pulls, unbiased prior"
    ),
    "warmup": MethodSpec("blocks", False, "warm-up ρ at N=1 + Top-K, then PSST (paper)"),
    "warmup-pooled": MethodSpec("pooled", True, "warm-up + Top-K, pooled, warm-up kept"),
    "uniform-pooled": MethodSpec("pooled", True, "all prompts on the same queries, pooled"),
    "prompt-only": MethodSpec("blocks", False, "halving over prompts at N=1"),
    "disjoint": MethodSpec("blocks", False, "prompt-only, then best N for that prompt"),
    "uniform": MethodSpec("blocks", False, "all prompts pulled equally at N_max"),
}

WARMUP_SHARE = 0.2
TOP_K = 4
# psst-pooled: at least this many queries per prompt per round when the share allows.
MIN_QUERIES = 2


# The pooled estimator extrapolates past the samples it has on a query, so pulls larger
# than this buy less than more queries would.
MAX_PULL = 8


def _pooled_cap(share: int, prompts: int) -> int | None:
    return max(1, min(MAX_PULL, share // max(prompts * MIN_QUERIES, 1)))


# sh-xprompt: other prompts' votes on a query stand in for more of a prompt's own, so
# pulls stay small and cover more queries.
XPROMPT_PULL = 1


def _xprompt_cap(share: int, prompts: int) -> int | None:
    return max(1, min(XPROMPT_PULL, share // max(prompts * MIN_QUERIES, 1)))


def _screen_pulls(first: int, prompts: int, pull: int) -> tuple[int, int, int]:
    """The screening round's pulls as :func:`~optimizer.plan.allocate` will draw them."""
    per_prompt = first // max(prompts * pull, 1)
    if per_prompt > 0:
        return (prompts, per_prompt, pull)
    return (prompts, 1, first // prompts) if first >= prompts else (first, 1, 1)


def _arm_counts(mask: Mask) -> tuple[int, ...]:
    return tuple(int(x) for x in mask.sum(axis=(1, 2)))


def plan_method(
    method: str, run: Run, warmup_share: float = WARMUP_SHARE, top_k: int = TOP_K
) -> Plan:
    """The plan of ``method`` on ``run`` (rounds, arms, shares, round-1 pulls, warnings)."""
    budget, arms = run.budget, run.all_arms()
    prompts, k_max = run.num_prompts, run.k_max
    phases: list[PhasePlan] = []
    warnings: list[str] = []

    def halving_phase(
        name: str,
        counts: tuple[int, ...],
        b: int,
        n: int,
        pulled: int,
        halve: bool = True,
        rounds: int | None = None,
        cap: Callable[[int, int], int | None] | None = None,
    ) -> None:
        r = rounds or rounds_for(max(counts))
        share = shares(b, r)
        first = share[0] if r > 1 else b
        size = n if cap is None else min(n, cap(first, pulled) or n)
        per_prompt = first // max(pulled * size, 1)
        if per_prompt == 0:
            fit = first // max(pulled, 1)
            warnings.append(
                f"{name}: round 1's share of {first} samples cannot give each of {pulled} "
                f"prompts one pull at N={n} (needs {pulled * n}); "
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
            if size < n and first < pulled * n:
                warnings.append(
                    f"{name}: round 1's share of {first} samples cannot give each of {pulled} "
                    f"prompts one pull at N={n} (needs {pulled * n}); each prompt gets "
                    f"{per_prompt} pull(s) at N={size} on different queries instead, and the "
                    "pooled estimator infers larger N from each query's answers"
                )
        phases.append(PhasePlan(name, b, tuple(halving_schedule(counts, r, halve)), share, pulls))

    if method in ("psst", "psst-pooled", "psst-urn"):
        cap = None if method == "psst" else _pooled_cap
        halving_phase("psst", _arm_counts(arms), budget, k_max, prompts, cap=cap)
    elif method in ("sh-pooled", "sh-xprompt"):
        counts = (prompts,) * len(run.tiers)
        cap = _pooled_cap if method == "sh-pooled" else _xprompt_cap
        halving_phase("halving over prompts", counts, budget, k_max, prompts, cap=cap)
    elif method == "sh-mixed":
        halving_phase(
            f"halving over prompts (pulls of 1, {MIXED_SHARE:.0%} in pulls of {MIXED_PULL})",
            (prompts,) * len(run.tiers),
            budget,
            k_max,
            prompts,
            cap=_xprompt_cap,
        )
    elif method == "sh-screen":
        pull = min(SCREEN_PULL, k_max)
        first = screen_budget(budget, prompts, pull)
        phases.append(
            PhasePlan(
                f"screening at N={pull}",
                first,
                ((prompts,) * len(run.tiers),),
                (first,),
                _screen_pulls(first, prompts, pull),
            )
        )
        kept = screened(prompts)
        halving_phase(
            f"halving over each tier's best {kept}",
            (kept,) * len(run.tiers),
            budget - first,
            k_max,
            min(prompts, kept * len(run.tiers)),
            cap=_pooled_cap,
        )
    elif method in ("warmup", "warmup-pooled"):
        warm = math.floor(warmup_share * budget)
        phases.append(
            PhasePlan(
                "warm-up at N=1",
                warm,
                ((prompts,) * len(run.tiers),),
                (warm,),
                (prompts, warm // max(prompts, 1), 1),
            )
        )
        k = min(top_k, prompts)
        counts = tuple(k * int(a) for a in arms[:, 0, :].sum(axis=1))
        pulled = min(prompts, k * len(run.tiers))  # at most: tiers may share top prompts
        halving_phase(f"psst on top {k}", counts, budget - warm, k_max, pulled)
    elif method == "prompt-only":
        halving_phase("prompt-only", (prompts,) * len(run.tiers), budget, 1, prompts)
    elif method == "disjoint":
        first = budget // 2
        halving_phase("prompt-only", (prompts,) * len(run.tiers), first, 1, prompts)
        counts = tuple(int(a) for a in arms[:, 0, :].sum(axis=1))
        halving_phase("best N", counts, budget - first, k_max, len(run.tiers))
    elif method == "uniform-pooled":
        halving_phase(
            "uniform",
            _arm_counts(arms),
            budget,
            k_max,
            prompts,
            halve=False,
            rounds=1,
            cap=_pooled_cap,
        )
    elif method == "uniform":
        halving_phase("uniform", _arm_counts(arms), budget, k_max, prompts, halve=False, rounds=1)
    else:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(METHODS)}")
    return Plan(method, budget, tuple(phases), tuple(warnings))


async def run_method(
    method: str, run: Run, warmup_share: float = WARMUP_SHARE, top_k: int = TOP_K
) -> Mask:
    """Run ``method``, spending exactly ``run.budget``; returns the final active arms."""
    runners: dict[str, Callable[[], Awaitable[Mask]]] = {
        "psst": lambda: run.halving(run.all_arms(), run.remaining),
        "psst-pooled": lambda: run.halving(run.all_arms(), run.remaining, pull_cap=_pooled_cap),
        "psst-urn": lambda: run.halving(run.all_arms(), run.remaining, pull_cap=_pooled_cap),
        "sh-pooled": lambda: run.halving(
            run.all_arms(), run.remaining, by_prompt=True, pull_cap=_pooled_cap
        ),
        "sh-xprompt": lambda: run.halving(
            run.all_arms(), run.remaining, by_prompt=True, pull_cap=_xprompt_cap
        ),
        "sh-screen": lambda: screen_and_halve(run, _pooled_cap),
        "sh-mixed": lambda: mixed_halving(run),
        "warmup": lambda: _warmup(run, warmup_share, top_k, keep=False),
        "warmup-pooled": lambda: _warmup(run, warmup_share, top_k, keep=True),
        "prompt-only": lambda: _prompt_only(run, run.remaining),
        "disjoint": lambda: _disjoint(run),
        "uniform": lambda: run.halving(run.all_arms(), run.remaining, rounds=1, halve=False),
        "uniform-pooled": lambda: run.halving(
            run.all_arms(), run.remaining, rounds=1, halve=False, pull_cap=_pooled_cap
        ),
    }
    if method not in runners:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(runners)}")
    return await runners[method]()


def _n1(run: Run) -> Mask:
    mask = np.zeros((len(run.tiers), run.num_prompts, run.k_max), dtype=bool)
    mask[:, :, 0] = True
    return mask


async def _prompt_only(run: Run, budget: int) -> Mask:
    return await run.halving(_n1(run), budget)


async def _disjoint(run: Run) -> Mask:
    chosen = await _prompt_only(run, run.remaining // 2)
    active = np.zeros_like(chosen)
    allowed = run.all_arms()
    for t, (p, _) in enumerate(run.select(chosen)):
        active[t, p] = allowed[t, p]
    return await run.halving(active, run.remaining)


async def _warmup(run: Run, share: float, top_k: int, *, keep: bool) -> Mask:
    warm = math.floor(share * run.budget)
    await run.halving(_n1(run), warm, rounds=1, halve=False)
    utility = run.ranking(run.estimator.estimate())[:, :, 0]  # (T, P) at N=1
    allowed = run.all_arms()
    active = np.zeros_like(allowed)
    for t in range(len(run.tiers)):
        order = np.lexsort((run.rng.random(run.num_prompts), -utility[t]))
        active[t, order[:top_k]] = allowed[t, order[:top_k]]
    if not keep:
        run.reset_estimates()
    return await run.halving(active, run.remaining)
