"""A two-objective reward table for simulated Best-of-N tasks.

One sample of prompt p on question q carries a reward vector drawn from
``N(means[p, q], diag(spread[p]²))``. The draw is a pure function of
(table seed, prompt, split, question, sample id), so the completion that carries the
sample id can be scored again, identically, by the reward endpoint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from iapo.simulator.exact import expected_max_standard_normal
from policies.aggregate import weight_vector
from policies.errors import ConfigError
from policies.table import Split

__all__ = ["RewardTable"]

_SPLIT_INDEX: dict[Split, int] = {"train": 0, "test": 1}


@dataclass(frozen=True, eq=False)
class RewardTable:
    """Per-prompt reward distributions on K objectives.

    ``means``: (P, Q, K) and ``means_test``: (P, Qt, K) mean reward per cell;
    ``spread``: (P, K) per-sample standard deviation; ``cost_per_prompt``: (P,).
    """

    objectives: tuple[str, ...]
    means: npt.NDArray[np.float64]
    means_test: npt.NDArray[np.float64]
    spread: npt.NDArray[np.float64]
    cost_per_prompt: npt.NDArray[np.float64]
    seed: int = 0

    def __post_init__(self) -> None:
        prompts, _, objectives = self.means.shape
        if objectives != len(self.objectives):
            raise ConfigError(f"means has {objectives} objectives, names {self.objectives}")
        if self.means_test.shape[::2] != (prompts, objectives):
            raise ConfigError("means_test must have the prompts and objectives of means")
        if self.spread.shape != (prompts, objectives) or np.any(self.spread < 0):
            raise ConfigError(f"spread must be (P, K) = ({prompts}, {objectives}) and ≥ 0")
        if self.cost_per_prompt.shape != (prompts,):
            raise ConfigError(f"cost_per_prompt must have shape ({prompts},)")

    @property
    def num_prompts(self) -> int:
        return int(self.means.shape[0])

    def questions(self, split: Split) -> int:
        return int(self._means(split).shape[1])

    def _means(self, split: Split) -> npt.NDArray[np.float64]:
        return self.means if split == "train" else self.means_test

    def draw(self, prompt: int | None, split: Split, question: int, sample_id: int) -> list[float]:
        """The reward vector (K,) of one sample, the same every time it is asked for.

        ``prompt=None`` (a prompt the table does not know) draws from the prompts' average.
        """
        code = self.num_prompts if prompt is None else prompt
        rng = np.random.default_rng([self.seed, code, _SPLIT_INDEX[split], question, sample_id])
        if prompt is None:
            mean = self._means(split)[:, question].mean(axis=0)
            spread = self.spread.mean(axis=0)
        else:
            mean, spread = self._means(split)[prompt, question], self.spread[prompt]
        return [float(x) for x in mean + spread * rng.standard_normal(len(mean))]

    def draw_unknown(self, text: str) -> list[float]:
        """Scores for a text no simulated sample produced: the table-wide average behaviour,
        seeded by the text so the same text always scores the same."""
        digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
        rng = np.random.default_rng([self.seed, digest])
        mean = self.means.mean(axis=(0, 1))
        spread = self.spread.mean(axis=0)
        return [float(x) for x in mean + spread * rng.standard_normal(len(mean))]

    def expected_best(
        self, split: Split, weights: Mapping[str, float] | None, n_max: int
    ) -> npt.NDArray[np.float64]:
        """(P, n_max): exact E[max over N samples of Σ_k w_k·r_k], averaged over questions.

        The weighted score of one sample is normal with mean w·μ and sd √Σ w_k²σ_k², so
        its best of N is the mean plus sd times E[max of N standard normals].
        """
        w = weight_vector(self.objectives, weights)
        mean = (self._means(split) @ w).mean(axis=1)  # (P,)
        sd = np.sqrt((self.spread**2) @ (w**2))  # (P,)
        best = mean[:, None] + sd[:, None] * expected_max_standard_normal(n_max)[None, :]
        return np.asarray(best, dtype=np.float64)
