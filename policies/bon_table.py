"""The Best-of-N kind of recorded table (the paper's categorical Best-of-N environment).

Re-exported by ``policies.table``, which reads and writes both kinds.

    table = BestOfNTable(outcomes, probs, ("helpfulness", "harmlessness"), cost)
    scores = table.scores({"helpfulness": 1.0, "harmlessness": 0.2})   # (P, Q, M)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from policies._arrays import Split, check_cost, check_probabilities, query_index
from policies.aggregate import weight_vector
from policies.errors import ConfigError

__all__ = ["BestOfNTable"]


@dataclass(frozen=True, eq=False)
class BestOfNTable:
    """Reward-vector distributions of a Best-of-N task (the paper's categorical environment).

    ``bon_outcomes``: (P, Q, M, K) the M reward vectors one sample of prompt p on query q
    can have, over the K ``objectives``; ``bon_probs``: (P, Q, M) their probabilities;
    ``cost_per_prompt``: (P,) the cost of one sample. ``bon_outcomes_test``: (P, Qt, M, K)
    and ``bon_probs_test``: (P, Qt, M) the optional held-out split.
    """

    bon_outcomes: npt.NDArray[np.float64]
    bon_probs: npt.NDArray[np.float64]
    objectives: tuple[str, ...]
    cost_per_prompt: npt.NDArray[np.float64]
    bon_outcomes_test: npt.NDArray[np.float64] | None = None
    bon_probs_test: npt.NDArray[np.float64] | None = None

    def __post_init__(self) -> None:
        _check_bon_split(self.bon_outcomes, self.bon_probs, "bon_outcomes", "bon_probs")
        prompts, _, outcomes, objectives = self.bon_outcomes.shape
        names = self.objectives
        if (
            len(names) != objectives
            or len(set(names)) != len(names)
            or not all(isinstance(n, str) and n for n in names)
        ):
            raise ConfigError(
                f"objectives must be {objectives} distinct non-empty names (one per last axis "
                f"of bon_outcomes), got {list(names)}"
            )
        check_cost(self.cost_per_prompt, prompts)
        if (self.bon_outcomes_test is None) != (self.bon_probs_test is None):
            raise ConfigError("give both bon_outcomes_test and bon_probs_test, or neither")
        if self.bon_outcomes_test is not None and self.bon_probs_test is not None:
            _check_bon_split(
                self.bon_outcomes_test, self.bon_probs_test, "bon_outcomes_test", "bon_probs_test"
            )
            test = self.bon_outcomes_test.shape
            if (test[0], test[2], test[3]) != (prompts, outcomes, objectives):
                raise ConfigError(
                    f"bon_outcomes_test has shape {test}; its prompts, outcomes and objectives "
                    f"must match bon_outcomes {self.bon_outcomes.shape}"
                )

    @property
    def num_prompts(self) -> int:
        return int(self.bon_outcomes.shape[0])

    @property
    def num_queries(self) -> int:
        """Queries of the training split."""
        return int(self.bon_outcomes.shape[1])

    @property
    def num_outcomes(self) -> int:
        return int(self.bon_outcomes.shape[2])

    @property
    def num_objectives(self) -> int:
        return int(self.bon_outcomes.shape[3])

    def merged(self) -> BestOfNTable:
        """Train and test queries together (no test split)."""
        if self.bon_outcomes_test is None or self.bon_probs_test is None:
            return BestOfNTable(
                self.bon_outcomes, self.bon_probs, self.objectives, self.cost_per_prompt
            )
        return BestOfNTable(
            np.concatenate([self.bon_outcomes, self.bon_outcomes_test], axis=1),
            np.concatenate([self.bon_probs, self.bon_probs_test], axis=1),
            self.objectives,
            self.cost_per_prompt,
        )

    def take(self, queries: npt.NDArray[np.int64]) -> BestOfNTable:
        """The training queries ``queries`` (indices, in that order), with no test split."""
        index = query_index(queries, self.num_queries)
        return BestOfNTable(
            self.bon_outcomes[:, index],
            self.bon_probs[:, index],
            self.objectives,
            self.cost_per_prompt,
        )

    def resplit(
        self, rng: np.random.Generator, test_share: float = 0.2
    ) -> tuple[BestOfNTable, BestOfNTable]:
        """Merge train and test, shuffle the queries, split into (train, test) tables."""
        merged = self.merged()
        order = rng.permutation(merged.num_queries)
        n_test = round(test_share * merged.num_queries)
        return merged.take(order[n_test:]), merged.take(order[:n_test])

    def questions(self, split: Split) -> int:
        """Number of questions in ``split`` (0 for a missing test split)."""
        outcomes = self.split(split)[0]
        return 0 if outcomes is None else int(outcomes.shape[1])

    def split(
        self, split: Split
    ) -> tuple[npt.NDArray[np.float64] | None, npt.NDArray[np.float64] | None]:
        """(bon_outcomes, bon_probs) of ``split``; (None, None) for a missing test split."""
        if split == "train":
            return self.bon_outcomes, self.bon_probs
        return self.bon_outcomes_test, self.bon_probs_test

    def probs(self, split: Split, prompt: int, question: int) -> npt.NDArray[np.float64]:
        """(M,) the outcome distribution of one cell, renormalised against rounding."""
        bon_probs = self.split(split)[1]
        if bon_probs is None:
            raise KeyError(f"the table has no {split} split")
        row = bon_probs[prompt, question]
        return np.asarray(row / row.sum(), dtype=np.float64)

    def scores(
        self, weights: Mapping[str, float] | None, split: Split = "train"
    ) -> npt.NDArray[np.float64]:
        """(P, Q, M) the weighted score Σ_k w_k·r_k of every outcome (None: equal weights)."""
        outcomes = self.split(split)[0]
        if outcomes is None:
            raise KeyError(f"the table has no {split} split")
        unknown = set(weights or {}) - set(self.objectives)
        if unknown:
            raise ConfigError(
                f"weights name unknown objectives {sorted(unknown)}; the table scores "
                f"{list(self.objectives)}"
            )
        return np.asarray(outcomes @ weight_vector(self.objectives, weights), dtype=np.float64)


def _check_bon_split(
    outcomes: npt.NDArray[np.float64], probs: npt.NDArray[np.float64], key: str, probs_key: str
) -> None:
    if outcomes.ndim != 4 or min(outcomes.shape) < 1:
        raise ConfigError(f"{key} must be a non-empty (P, Q, M, K) array, got {outcomes.shape}")
    if not np.all(np.isfinite(outcomes)):
        raise ConfigError(f"{key} must be finite rewards")
    if probs.shape != outcomes.shape[:3]:
        raise ConfigError(
            f"{probs_key} has shape {probs.shape}, expected {outcomes.shape[:3]} (P, Q, M of {key})"
        )
    check_probabilities(probs, probs_key)
