"""The built-in synthetic tables: no data files, generated from a seed.

The majority table has six prompts whose N=1 ranking differs from their large-N ranking:
"confident" is best at N=1 but its wrong answers pile onto one trap answer, so voting
cannot fix them (it plateaus); "step-by-step" and "verify" are worse at N=1 but their
errors are spread out, so a majority vote lifts them towards 1. Costs differ about 3x,
so the default tiers (λ = 1.0, 0.2, 0.0) pick visibly different (prompt, N).

The reward table has six prompts trading helpfulness for harmlessness, with different
spreads: a high-spread prompt is mediocre at N=1 and best at large N, since Best-of-N
keeps the top of its distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from iapo.simulator.rewards import RewardTable
from policies.table import RecordedTable
from policies.tiers import Tier

__all__ = [
    "DEFAULT_SEED",
    "MAJORITY_PROMPTS",
    "REWARD_OBJECTIVES",
    "REWARD_PROMPTS",
    "REWARD_TIERS",
    "synthetic_majority_table",
    "synthetic_reward_table",
]

DEFAULT_SEED = 7


@dataclass(frozen=True)
class _MajorityArchetype:
    text: str
    skill: float  # logit of P(correct) on a question of average difficulty
    slope: float  # how fast P(correct) falls with difficulty
    trap: float  # share of the wrong mass on the question's trap answer
    cost: float  # cost of one sample


_MAJORITY = (
    _MajorityArchetype(
        "Answer with the final result only, in \\boxed{}.", 0.2, 1.0, 0.90, 0.008
    ),
    _MajorityArchetype(
        "You are a math olympiad champion. Answer confidently and put the result in \\boxed{}.",
        1.2, 1.2, 0.97, 0.010,
    ),
    _MajorityArchetype(
        "Solve the problem step by step, then give the final answer in \\boxed{}.",
        0.75, 0.9, 0.25, 0.016,
    ),
    _MajorityArchetype(
        "Solve the problem step by step, verify the result by substituting it back, and give "
        "the final answer in \\boxed{}.",
        0.95, 0.9, 0.25, 0.028,
    ),
    _MajorityArchetype(
        "Hey! Can you figure this one out? Put the answer in \\boxed{}.", -0.2, 1.0, 0.30, 0.012
    ),
    _MajorityArchetype(
        "Write a detailed essay on the problem's background before answering in \\boxed{}.",
        0.1, 1.0, 0.85, 0.022,
    ),
)  # fmt: skip

MAJORITY_PROMPTS: tuple[str, ...] = tuple(a.text for a in _MAJORITY)


def synthetic_majority_table(
    seed: int = DEFAULT_SEED, *, train: int = 150, test: int = 100, categories: int = 5
) -> RecordedTable:
    """A (6, train, categories) majority table with a held-out split of ``test`` questions."""
    rng = np.random.default_rng(seed)
    questions = train + test
    difficulty = rng.normal(0.0, 1.0, questions)
    gold = rng.integers(0, categories, questions)
    # The trap is one wrong category per question, shared by every prompt: the
    # plausible-but-wrong answer a confident model keeps giving.
    trap = (gold + rng.integers(1, categories, questions)) % categories
    cat_probs = np.zeros((len(_MAJORITY), questions, categories))
    rows = np.arange(questions)
    for p, arche in enumerate(_MAJORITY):
        logit = arche.skill - arche.slope * difficulty + rng.normal(0.0, 0.4, questions)
        correct = 1.0 / (1.0 + np.exp(-logit))
        spread = rng.dirichlet(np.full(categories - 1, 2.0), questions)
        wrong = np.zeros((questions, categories))
        # scatter the spread mass over the wrong categories (all but gold), in order
        wrong_cats = (gold[:, None] + np.arange(1, categories)[None, :]) % categories
        wrong[rows[:, None], wrong_cats] = (1.0 - arche.trap) * spread
        wrong[rows, trap] += arche.trap
        cell = wrong * (1.0 - correct)[:, None]
        cell[rows, gold] = correct
        cat_probs[p] = cell
    cost = np.array([a.cost for a in _MAJORITY])
    return RecordedTable(
        cat_probs=cat_probs[:, :train],
        answers=gold[:train],
        cost_per_prompt=cost,
        cat_probs_test=cat_probs[:, train:],
        answers_test=gold[train:],
    )


@dataclass(frozen=True)
class _RewardArchetype:
    text: str
    mean: tuple[float, float]  # (helpfulness, harmlessness)
    spread: tuple[float, float]
    cost: float


_REWARD = (
    _RewardArchetype(
        "You are a blunt expert. Give the most useful answer, whatever it takes.",
        (0.72, 0.40), (0.05, 0.05), 0.006,
    ),
    _RewardArchetype(
        "You are a cautious assistant. Avoid anything that could possibly cause harm.",
        (0.40, 0.76), (0.05, 0.05), 0.006,
    ),
    _RewardArchetype(
        "Brainstorm freely and creatively; surprise the user with bold ideas.",
        (0.55, 0.50), (0.22, 0.18), 0.012,
    ),
    _RewardArchetype(
        "Be helpful, honest and harmless. Balance usefulness against safety.",
        (0.60, 0.60), (0.05, 0.05), 0.010,
    ),
    _RewardArchetype(
        "Think carefully about risks first, then answer thoroughly and safely.",
        (0.50, 0.64), (0.08, 0.16), 0.016,
    ),
    _RewardArchetype("Reply in one short sentence.", (0.45, 0.45), (0.10, 0.10), 0.003),
)  # fmt: skip

REWARD_PROMPTS: tuple[str, ...] = tuple(a.text for a in _REWARD)
REWARD_OBJECTIVES: tuple[str, ...] = ("helpfulness", "harmlessness")
REWARD_TIERS: tuple[Tier, ...] = (
    Tier("economy", cost_weight=1.0, objective_weights={"helpfulness": 0.5, "harmlessness": 0.5}),
    Tier("helpful", cost_weight=0.2, objective_weights={"helpfulness": 1.0, "harmlessness": 0.2}),
    Tier("safe", cost_weight=0.2, objective_weights={"helpfulness": 0.2, "harmlessness": 1.0}),
)


def synthetic_reward_table(
    seed: int = DEFAULT_SEED, *, train: int = 120, test: int = 80
) -> RewardTable:
    """A (6, train, 2) helpfulness/harmlessness table with a held-out split."""
    rng = np.random.default_rng([seed, 1])
    mean: npt.NDArray[np.float64] = np.array([a.mean for a in _REWARD])
    # Some requests are easier to answer well (and safely) than others, for every prompt.
    question_effect = rng.normal(0.0, 0.08, (train + test, len(REWARD_OBJECTIVES)))
    means = mean[:, None, :] + question_effect[None, :, :]
    return RewardTable(
        objectives=REWARD_OBJECTIVES,
        means=means[:, :train],
        means_test=means[:, train:],
        spread=np.array([a.spread for a in _REWARD]),
        cost_per_prompt=np.array([a.cost for a in _REWARD]),
        seed=seed,
    )
