"""Recorded-distribution tables: the ``.npz`` contract of DESIGN.md, in one place.

A :class:`RecordedTable` holds, per prompt and query, the distribution of one sample's
answer category, the gold category per query and the cost of one sample per prompt; a
held-out split is optional. The optimizer only samples it (``optimizer.ReplaySampler``),
the simulator serves it over HTTP. Construction validates the arrays and names the bad key.

    table = load_table("MATH_final.npz")
    train, test = table.resplit(np.random.default_rng(0), test_share=0.2)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from policies.errors import ConfigError

__all__ = ["RecordedTable", "Split", "load_table", "save_table"]

Split = Literal["train", "test"]

# Tolerance on Σ_c cat_probs[p, q, c] = 1; recorded tables are rounded to 1/128.
_SUM_TOLERANCE = 1e-6


@dataclass(frozen=True, eq=False)
class RecordedTable:
    """Answer-category distributions of a majority-vote task.

    ``cat_probs``: (P, Q, C) P(one sample of prompt p on query q is category c);
    ``answers``: (Q,) gold category; ``cost_per_prompt``: (P,) cost of one sample;
    ``cat_probs_test``: (P, Qt, C) and ``answers_test``: (Qt,) the optional held-out split.
    """

    cat_probs: npt.NDArray[np.float64]
    answers: npt.NDArray[np.int64]
    cost_per_prompt: npt.NDArray[np.float64]
    cat_probs_test: npt.NDArray[np.float64] | None = None
    answers_test: npt.NDArray[np.int64] | None = None

    def __post_init__(self) -> None:
        _check_split(self.cat_probs, self.answers, "cat_probs", "answers")
        prompts, _, categories = self.cat_probs.shape
        if self.cost_per_prompt.shape != (prompts,):
            raise ConfigError(
                f"cost_per_prompt has shape {self.cost_per_prompt.shape}, expected ({prompts},)"
            )
        if not np.all(np.isfinite(self.cost_per_prompt)) or np.any(self.cost_per_prompt < 0):
            raise ConfigError("cost_per_prompt must be finite and ≥ 0")
        if (self.cat_probs_test is None) != (self.answers_test is None):
            raise ConfigError("give both cat_probs_test and answers_test, or neither")
        if self.cat_probs_test is not None and self.answers_test is not None:
            _check_split(self.cat_probs_test, self.answers_test, "cat_probs_test", "answers_test")
            if self.cat_probs_test.shape[::2] != (prompts, categories):
                raise ConfigError(
                    f"cat_probs_test has shape {self.cat_probs_test.shape}; its prompts and "
                    f"categories must match cat_probs {self.cat_probs.shape}"
                )

    @property
    def num_prompts(self) -> int:
        return int(self.cat_probs.shape[0])

    @property
    def num_queries(self) -> int:
        """Queries of the training split."""
        return int(self.cat_probs.shape[1])

    @property
    def num_categories(self) -> int:
        return int(self.cat_probs.shape[2])

    def merged(self) -> RecordedTable:
        """Train and test queries together (no test split)."""
        if self.cat_probs_test is None or self.answers_test is None:
            return RecordedTable(self.cat_probs, self.answers, self.cost_per_prompt)
        return RecordedTable(
            np.concatenate([self.cat_probs, self.cat_probs_test], axis=1),
            np.concatenate([self.answers, self.answers_test]),
            self.cost_per_prompt,
        )

    def resplit(
        self, rng: np.random.Generator, test_share: float = 0.2
    ) -> tuple[RecordedTable, RecordedTable]:
        """Merge train and test, shuffle the queries, split into (train, test) tables."""
        merged = self.merged()
        order = rng.permutation(merged.num_queries)
        n_test = round(test_share * merged.num_queries)
        test, train = order[:n_test], order[n_test:]
        return (
            RecordedTable(merged.cat_probs[:, train], merged.answers[train], self.cost_per_prompt),
            RecordedTable(merged.cat_probs[:, test], merged.answers[test], self.cost_per_prompt),
        )

    def questions(self, split: Split) -> int:
        """Number of questions in ``split`` (0 for a missing test split)."""
        answers = self.split(split)[1]
        return 0 if answers is None else len(answers)

    def split(
        self, split: Split
    ) -> tuple[npt.NDArray[np.float64] | None, npt.NDArray[np.int64] | None]:
        """(cat_probs, answers) of ``split``; (None, None) for a missing test split."""
        if split == "train":
            return self.cat_probs, self.answers
        return self.cat_probs_test, self.answers_test

    def probs(self, split: Split, prompt: int, question: int) -> npt.NDArray[np.float64]:
        """(C,) the category distribution of one cell, renormalised against rounding."""
        cat_probs = self.split(split)[0]
        if cat_probs is None:
            raise KeyError(f"the table has no {split} split")
        row = cat_probs[prompt, question]
        return np.asarray(row / row.sum(), dtype=np.float64)

    def gold(self, split: Split, question: int) -> int:
        answers = self.split(split)[1]
        if answers is None:
            raise KeyError(f"the table has no {split} split")
        return int(answers[question])


def _check_split(
    cat_probs: npt.NDArray[np.float64], answers: npt.NDArray[np.int64], probs: str, gold: str
) -> None:
    if cat_probs.ndim != 3 or min(cat_probs.shape) < 1:
        raise ConfigError(f"{probs} must be a non-empty (P, Q, C) array, got {cat_probs.shape}")
    if answers.shape != cat_probs.shape[1:2]:
        raise ConfigError(f"{gold} has shape {answers.shape}, expected ({cat_probs.shape[1]},)")
    if not np.all(np.isfinite(cat_probs)) or np.any(cat_probs < 0):
        raise ConfigError(f"{probs} must be finite probabilities ≥ 0")
    sums = cat_probs.sum(axis=-1)
    if np.any(np.abs(sums - 1.0) > _SUM_TOLERANCE):
        worst = np.unravel_index(int(np.argmax(np.abs(sums - 1.0))), sums.shape)
        raise ConfigError(f"{probs}[{worst[0]}, {worst[1]}] sums to {sums[worst]:.6f}, expected 1")
    if np.any(answers < 0) or np.any(answers >= cat_probs.shape[2]):
        raise ConfigError(f"{gold} must be category indices in [0, {cat_probs.shape[2]})")


def load_table(path: str | Path) -> RecordedTable:
    """Read and validate a recorded-distribution table (``.npz``)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except OSError as exc:
        raise ConfigError(f"cannot read table {path}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: not a numpy .npz table: {exc}") from None
    missing = {"cat_probs", "answers", "cost_per_prompt"} - set(arrays)
    if missing:
        raise ConfigError(f"{path}: missing keys {sorted(missing)}")
    test_probs = arrays.get("cat_probs_test")
    test_answers = arrays.get("answers_test")
    try:
        return RecordedTable(
            cat_probs=np.asarray(arrays["cat_probs"], dtype=np.float64),
            answers=np.asarray(arrays["answers"], dtype=np.int64),
            cost_per_prompt=np.asarray(arrays["cost_per_prompt"], dtype=np.float64),
            cat_probs_test=None if test_probs is None else np.asarray(test_probs, np.float64),
            answers_test=None if test_answers is None else np.asarray(test_answers, np.int64),
        )
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def save_table(table: RecordedTable, path: str | Path) -> None:
    """Write ``table`` in the ``.npz`` contract, so ``iapo optimize --replay`` can read it."""
    arrays: dict[str, npt.NDArray[np.generic]] = {
        "cat_probs": table.cat_probs,
        "answers": table.answers,
        "cost_per_prompt": table.cost_per_prompt,
    }
    if table.cat_probs_test is not None and table.answers_test is not None:
        arrays["cat_probs_test"] = table.cat_probs_test
        arrays["answers_test"] = table.answers_test
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]
    except OSError as exc:
        raise ConfigError(f"cannot write table {path}: {exc.strerror}") from None
