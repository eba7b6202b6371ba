"""Synthetic recorded tables of any shape, from a seed: for tests, benchmarks and demos.

``categorical_bon_table`` is the paper's categorical Best-of-N environment: one sample of
prompt p on query q is one of M reward vectors over K objectives, drawn with probabilities
``bon_probs[p, q]``. The authors draw vectors and probabilities uniformly at random per
cell; here each prompt has a character, so that the choice of (prompt, N) matters:

- a *trade-off* between the objectives (its mean reward vector),
- a *spread*: how far its outcomes scatter around that mean, which is what Best-of-N
  harvests (a high-spread prompt can be mediocre at N=1 and best at large N),
- a *focus*: how concentrated the probabilities over its outcomes are,
- a cost per sample (spread-out, "creative" prompts cost more).

Each query shifts every prompt's rewards alike (some requests are easier to answer well).

``majority_table`` is a majority-vote table whose N=1 and large-N rankings differ: half the
prompts are "confident" (more often right at N=1, but their wrong answers pile onto one
trap answer per query, so voting cannot fix them) and half "careful" (less often right,
wrong answers spread over the other categories, so a vote lifts them). ``skill_spread``
sets how far apart the prompts are (0: only their error shapes differ).

    table = categorical_bon_table(0, prompts=8, queries=200, outcomes=6, objectives=2)
    save_table(table, "bon.npz")
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from policies.errors import ConfigError
from policies.table import BestOfNTable, RecordedTable

__all__ = ["OBJECTIVE_NAMES", "categorical_bon_table", "majority_table", "objective_names"]

OBJECTIVE_NAMES: tuple[str, ...] = ("helpfulness", "harmlessness", "honesty", "concision")


def objective_names(objectives: int | Sequence[str]) -> tuple[str, ...]:
    """Names for ``objectives``: given names as they are, or the first K of
    :data:`OBJECTIVE_NAMES` followed by ``objective5``, ``objective6``, …"""
    if isinstance(objectives, int):
        if objectives < 1:
            raise ConfigError(f"a table needs at least one objective, got {objectives}")
        extra = tuple(f"objective{k + 1}" for k in range(len(OBJECTIVE_NAMES), objectives))
        return (OBJECTIVE_NAMES + extra)[:objectives]
    return tuple(objectives)


def _positive(**sizes: int) -> None:
    for name, value in sizes.items():
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")


def categorical_bon_table(
    seed: int,
    *,
    prompts: int = 8,
    queries: int = 200,
    outcomes: int = 6,
    objectives: int | Sequence[str] = 2,
    test_queries: int = 0,
) -> BestOfNTable:
    """A (prompts, queries, outcomes, K) Best-of-N table with rewards in [0, 1].

    ``test_queries`` > 0 adds a held-out split drawn the same way.
    """
    names = objective_names(objectives)
    _positive(prompts=prompts, queries=queries, outcomes=outcomes)
    if test_queries < 0:
        raise ConfigError(f"test_queries must be ≥ 0, got {test_queries}")
    rng = np.random.default_rng([seed, 16, 3])
    k = len(names)
    total = queries + test_queries
    # A prompt's trade-off: a point of the simplex, scaled to a mean reward level.
    level = rng.uniform(0.35, 0.65, prompts)
    tilt = rng.dirichlet(np.full(k, 2.0), prompts) * k  # mean 1 per objective
    mean = np.clip(level[:, None] * (0.5 + 0.5 * tilt), 0.05, 0.95)  # (P, K)
    spread = rng.uniform(0.03, 0.25, prompts)  # (P,)
    focus = rng.uniform(0.3, 3.0, prompts)  # Dirichlet concentration of the probabilities
    query_effect = rng.normal(0.0, 0.08, (total, k))  # (Q, K), shared by every prompt
    noise = rng.standard_normal((prompts, total, outcomes, k))
    vectors = (
        mean[:, None, None, :]
        + query_effect[None, :, None, :]
        + spread[:, None, None, None] * noise
    )
    vectors = np.clip(vectors, 0.0, 1.0)
    gamma = rng.gamma(focus[:, None, None], 1.0, (prompts, total, outcomes)) + 1e-9
    probs = gamma / gamma.sum(axis=-1, keepdims=True)
    # Spread-out prompts write longer, more varied answers: they cost more per sample.
    cost = np.round(0.004 + 0.06 * spread * rng.uniform(0.7, 1.3, prompts), 6)
    return _split_bon(vectors, probs, names, cost, queries)


def _split_bon(
    vectors: npt.NDArray[np.float64],
    probs: npt.NDArray[np.float64],
    names: tuple[str, ...],
    cost: npt.NDArray[np.float64],
    queries: int,
) -> BestOfNTable:
    has_test = vectors.shape[1] > queries
    return BestOfNTable(
        bon_outcomes=vectors[:, :queries],
        bon_probs=probs[:, :queries],
        objectives=names,
        cost_per_prompt=cost,
        bon_outcomes_test=vectors[:, queries:] if has_test else None,
        bon_probs_test=probs[:, queries:] if has_test else None,
    )


def majority_table(
    seed: int,
    *,
    prompts: int = 8,
    queries: int = 200,
    categories: int = 5,
    test_queries: int = 0,
    skill_spread: float = 0.2,
) -> RecordedTable:
    """A (prompts, queries, categories) majority table whose N=1 winner loses at large N.

    Even-numbered prompts are confident (their wrong answers mostly on the query's trap
    answer), odd ones careful (wrong answers spread); the confident ones get a head start
    at N=1. ``skill_spread`` is the standard deviation of the prompts' skills on the logit
    scale: small values make prompts hard to tell apart.
    """
    _positive(prompts=prompts, queries=queries)
    if categories < 2:
        raise ConfigError(f"categories must be at least 2, got {categories}")
    if test_queries < 0 or skill_spread < 0:
        raise ConfigError("test_queries and skill_spread must be ≥ 0")
    rng = np.random.default_rng([seed, 16, 4])
    total = queries + test_queries
    difficulty = rng.normal(0.0, 1.2, total)
    gold = rng.integers(0, categories, total)
    trap = (gold + rng.integers(1, categories, total)) % categories
    confident = np.arange(prompts) % 2 == 0
    skill = 0.6 + skill_spread * rng.standard_normal(prompts) + np.where(confident, 0.5, 0.0)
    trap_share = np.where(
        confident, rng.uniform(0.75, 0.97, prompts), rng.uniform(0.05, 0.35, prompts)
    )
    logit = skill[:, None] - difficulty[None, :] + rng.normal(0.0, 0.3, (prompts, total))
    correct = 1.0 / (1.0 + np.exp(-logit))  # (P, Q)
    # Wrong mass: trap_share on the trap, the rest spread over the other wrong answers.
    wrong_cats = (gold[:, None] + np.arange(1, categories)[None, :]) % categories  # (Q, C-1)
    spread = rng.dirichlet(np.full(categories - 1, 2.0), (prompts, total))  # (P, Q, C-1)
    cell = np.zeros((prompts, total, categories))
    rows = np.arange(total)
    cell[:, rows[:, None], wrong_cats] = (1.0 - trap_share)[:, None, None] * spread
    cell[:, rows, trap] += trap_share[:, None]
    cell *= (1.0 - correct)[..., None]
    cell[:, rows, gold] = correct
    # Careful prompts reason longer: they cost more per sample.
    cost = np.round(np.where(confident, 0.008, 0.016) * rng.uniform(0.7, 1.4, prompts), 6)
    has_test = test_queries > 0
    return RecordedTable(
        cat_probs=cell[:, :queries],
        answers=gold[:queries],
        cost_per_prompt=cost,
        cat_probs_test=cell[:, queries:] if has_test else None,
        answers_test=gold[queries:] if has_test else None,
    )
