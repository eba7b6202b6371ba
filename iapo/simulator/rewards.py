"""Where a simulated Best-of-N task's reward vectors come from.

:class:`RewardTable` (the built-in synthetic task): one sample of prompt p on question q
carries a reward vector drawn from ``N(means[p, q], diag(spread[p]²))``.
:class:`TableRewards` (``iapo simulate --replay`` of a Best-of-N table): one sample is one
of the table's M outcome vectors, drawn with ``bon_probs[p, q]``.

Either way the draw is a pure function of (seed, prompt, split, question, sample id), so
the completion that carries the sample id can be scored again, identically, by the
reward endpoint. :class:`RewardSource` is what the simulator needs of both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from iapo.simulator.exact import expected_max_standard_normal
from optimizer.exact import best_of_n_exact
from policies.aggregate import weight_vector
from policies.errors import ConfigError
from policies.table import BestOfNTable, Split

__all__ = ["RewardSource", "RewardTable", "TableRewards"]


class RewardSource(Protocol):
    """The reward side of a simulator: K named objectives, P prompts, a draw per sample."""

    @property
    def objectives(self) -> tuple[str, ...]: ...

    @property
    def num_prompts(self) -> int: ...

    @property
    def cost_per_prompt(self) -> npt.NDArray[np.float64]: ...

    def questions(self, split: Split) -> int: ...

    def draw(
        self, prompt: int | None, split: Split, question: int, sample_id: int
    ) -> list[float]: ...

    def draw_unknown(self, text: str) -> list[float]: ...

    def label(self, prompt: int | None, split: Split, question: int, sample_id: int) -> str:
        """A short text naming the drawn sample, for the completion ("" if nothing to say)."""
        ...

    def expected_best(
        self, split: Split, weights: Mapping[str, float] | None, n_max: int
    ) -> npt.NDArray[np.float64]: ...


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

    def label(self, prompt: int | None, split: Split, question: int, sample_id: int) -> str:
        return ""

    def draw_unknown(self, text: str) -> list[float]:
        """Scores for a text no simulated sample produced: the table-wide average behaviour,
        seeded by the text so the same text always scores the same."""
        rng = np.random.default_rng([self.seed, _digest(text)])
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


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


class TableRewards:
    """A Best-of-N table as the simulator's reward side.

    A sample of prompt p on question q is outcome m ~ ``bon_probs[p, q]`` and scores
    ``bon_outcomes[p, q, m]``; a prompt the table does not know (``None``) draws a prompt
    uniformly, then its outcome: the prompts' average behaviour.
    """

    def __init__(self, table: BestOfNTable, seed: int = 0) -> None:
        self.table = table
        self.seed = seed

    @property
    def objectives(self) -> tuple[str, ...]:
        return self.table.objectives

    @property
    def num_prompts(self) -> int:
        return self.table.num_prompts

    @property
    def cost_per_prompt(self) -> npt.NDArray[np.float64]:
        return self.table.cost_per_prompt

    def questions(self, split: Split) -> int:
        return self.table.questions(split)

    def _outcome(
        self, prompt: int | None, split: Split, question: int, sample_id: int
    ) -> tuple[int, int]:
        code = self.num_prompts if prompt is None else prompt
        rng = np.random.default_rng([self.seed, 16, code, _SPLIT_INDEX[split], question, sample_id])
        cell = int(rng.integers(self.num_prompts)) if prompt is None else prompt
        probs = self.table.probs(split, cell, question)
        return cell, int(rng.choice(len(probs), p=probs))

    def draw(self, prompt: int | None, split: Split, question: int, sample_id: int) -> list[float]:
        """The outcome vector (K,) of one sample, the same every time it is asked for."""
        cell, outcome = self._outcome(prompt, split, question, sample_id)
        outcomes = self.table.split(split)[0]
        assert outcomes is not None  # _outcome read this split's probabilities
        return [float(x) for x in outcomes[cell, question, outcome]]

    def label(self, prompt: int | None, split: Split, question: int, sample_id: int) -> str:
        return f"outcome {self._outcome(prompt, split, question, sample_id)[1]}"

    def draw_unknown(self, text: str) -> list[float]:
        """Scores for a text no simulated sample produced: a training outcome of a random
        prompt and question, seeded by the text so the same text always scores the same."""
        rng = np.random.default_rng([self.seed, 17, _digest(text)])
        question = int(rng.integers(self.table.num_queries))
        return self.draw(None, "train", question, int(rng.integers(2**62)))

    def expected_best(
        self, split: Split, weights: Mapping[str, float] | None, n_max: int
    ) -> npt.NDArray[np.float64]:
        """(P, n_max): exact E[max over N samples of Σ_k w_k·r_k], averaged over questions."""
        probs = self.table.split(split)[1]
        if probs is None:
            raise KeyError(f"the table has no {split} split")
        best = best_of_n_exact(self.table.scores(weights, split), probs, n_max)
        return np.asarray(best.mean(axis=1), dtype=np.float64)
