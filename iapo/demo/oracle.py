"""What each arm is worth on the held-out questions, computed exactly from the tables.

The demo's measured figures carry sampling noise; these do not. For every tier they give
the exact expected utility of the arm IAPO chose, of the prompt-only arm, and of the
best arm there is, on the questions the demo's traffic asks.
"""

from __future__ import annotations

import msgspec
import numpy as np
import numpy.typing as npt

from iapo.simulator import Simulator, Split, majority_credit_exact
from policies.tasks import TaskSpec
from policies.tiers import Tier

__all__ = ["ExactUtility", "exact_utility"]


class ExactUtility(msgspec.Struct, frozen=True):
    """Exact expected utility per request on the test questions."""

    chosen: float
    prompt_only: float
    best: float
    best_prompt: str
    best_n: int


def _utility_table(
    simulator: Simulator, spec: TaskSpec, tier: Tier, split: Split
) -> npt.NDArray[np.float64]:
    """(P, n_max) exact expected utility of every arm under ``tier``."""
    n = np.arange(1, spec.n_max + 1)
    if spec.strategy == "majority":
        probs, gold = simulator.majority.split(split)
        if probs is None or gold is None:
            probs, gold = simulator.majority.split("train")
        assert probs is not None
        assert gold is not None
        quality = majority_credit_exact(probs, gold, spec.n_max).mean(axis=1)
        cost = simulator.cost_per_prompt("majority")
    else:
        assert simulator.reward is not None
        quality = simulator.reward.expected_best(split, tier.objective_weights, spec.n_max)
        cost = simulator.cost_per_prompt("reward")
    return np.asarray(quality - tier.cost_weight * cost[:, None] * n[None, :], dtype=np.float64)


def exact_utility(
    simulator: Simulator,
    spec: TaskSpec,
    tier: Tier,
    chosen: tuple[str, int],
    prompt_only: tuple[str, int],
    split: Split = "test",
) -> ExactUtility:
    """Exact utilities of the chosen and prompt-only arms (prompt id, N) and of the best arm."""
    table = _utility_table(simulator, spec, tier, split)
    ids = [p.id for p in spec.prompts]
    best_p, best_n = np.unravel_index(int(np.argmax(table)), table.shape)
    return ExactUtility(
        chosen=float(table[ids.index(chosen[0]), chosen[1] - 1]),
        prompt_only=float(table[ids.index(prompt_only[0]), prompt_only[1] - 1]),
        best=float(table[best_p, best_n]),
        best_prompt=ids[int(best_p)],
        best_n=int(best_n) + 1,
    )
