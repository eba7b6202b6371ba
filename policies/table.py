"""Recorded-distribution tables: the ``.npz`` contract of DESIGN.md, in one place.

Two kinds. A :class:`RecordedTable` (majority vote) holds, per prompt and query, the
distribution of one sample's answer category, the gold category per query and the cost
of one sample per prompt. A :class:`BestOfNTable` holds, per prompt and query, the M
reward vectors (over K named objectives) one sample can have and their probabilities.
A held-out split is optional in both. The optimizer only samples a table
(``optimizer.ReplaySampler``), the simulator serves it over HTTP. Construction validates
the arrays and names the bad key; :func:`load_table` tells the kinds apart by their keys.

    table = load_table("MATH_final.npz")
    train, test = table.resplit(np.random.default_rng(0), test_share=0.2)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

from policies._arrays import Split, check_cost, check_probabilities, query_index
from policies.bon_table import BestOfNTable
from policies.errors import ConfigError

__all__ = [
    "AnyTable",
    "BestOfNTable",
    "RecordedTable",
    "Split",
    "load_table",
    "replay_prompt_texts",
    "save_table",
]


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
        check_cost(self.cost_per_prompt, prompts)
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

    def take(self, queries: npt.NDArray[np.int64]) -> RecordedTable:
        """The training queries ``queries`` (indices, in that order), with no test split."""
        index = query_index(queries, self.num_queries)
        return RecordedTable(self.cat_probs[:, index], self.answers[index], self.cost_per_prompt)

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


AnyTable: TypeAlias = RecordedTable | BestOfNTable
"""Either kind of recorded table; ``isinstance`` tells them apart."""


def _check_split(
    cat_probs: npt.NDArray[np.float64], answers: npt.NDArray[np.int64], probs: str, gold: str
) -> None:
    if cat_probs.ndim != 3 or min(cat_probs.shape) < 1:
        raise ConfigError(f"{probs} must be a non-empty (P, Q, C) array, got {cat_probs.shape}")
    if answers.shape != cat_probs.shape[1:2]:
        raise ConfigError(f"{gold} has shape {answers.shape}, expected ({cat_probs.shape[1]},)")
    check_probabilities(cat_probs, probs)
    if np.any(answers < 0) or np.any(answers >= cat_probs.shape[2]):
        raise ConfigError(f"{gold} must be category indices in [0, {cat_probs.shape[2]})")


_MAJORITY_STYLES = (
    "Think step by step and put the final answer in \\boxed{}.",
    "Answer concisely; write the final answer in \\boxed{}.",
    "You are an expert mathematician. Show your work and box the answer with \\boxed{}.",
    "Explain your reasoning to a student, then give the answer in \\boxed{}.",
    "Work backwards from what is asked, then state the result in \\boxed{}.",
)
_BEST_OF_N_STYLES = (
    "Answer the request as helpfully as you can.",
    "Answer the request carefully, avoiding anything that could cause harm.",
    "Be brief and direct.",
    "Explain your answer step by step, with the caveats that matter.",
    "Be helpful, honest and harmless.",
)


def replay_prompt_texts(table: AnyTable | int) -> tuple[str, ...]:
    """The prompt texts of a recorded table, whose real prompts were not recorded.

    ``iapo optimize --replay`` writes them into the policy and ``iapo simulate --replay``
    recognises them, so a policy optimised on a table is served against the same table.
    An int is a majority table's prompt count.
    """
    if isinstance(table, BestOfNTable):
        styles, count = _BEST_OF_N_STYLES, table.num_prompts
    else:
        styles = _MAJORITY_STYLES
        count = table if isinstance(table, int) else table.num_prompts
    return tuple(f"Prompt variant {p}. {styles[p % len(styles)]}" for p in range(count))


_MAJORITY_KEYS = ("cat_probs", "answers", "cost_per_prompt")
_BEST_OF_N_KEYS = ("bon_outcomes", "bon_probs", "objectives", "cost_per_prompt")


def load_table(path: str | Path) -> AnyTable:
    """Read and validate a recorded table (``.npz``) of either kind, told apart by its keys."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except OSError as exc:
        raise ConfigError(f"cannot read table {path}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: not a numpy .npz table: {exc}") from None
    try:
        return _table_of(arrays)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _missing(arrays: Mapping[str, object], keys: tuple[str, ...]) -> list[str]:
    return [key for key in keys if key not in arrays]


def _table_of(arrays: Mapping[str, npt.NDArray[np.generic]]) -> AnyTable:
    majority = any(key in arrays for key in ("cat_probs", "answers"))
    best_of_n = any(key in arrays for key in ("bon_outcomes", "bon_probs"))
    if majority and best_of_n:
        raise ConfigError(
            "holds keys of both kinds (cat_probs/answers and bon_outcomes/bon_probs); "
            "a table is a majority table or a Best-of-N table, not both"
        )
    if best_of_n:
        missing = _missing(arrays, _BEST_OF_N_KEYS)
        if missing:
            raise ConfigError(f"a Best-of-N table, but missing keys {missing}")
        return _best_of_n_table(arrays)
    missing = _missing(arrays, _MAJORITY_KEYS)
    if majority:
        if missing:
            raise ConfigError(f"a majority table, but missing keys {missing}")
    else:
        raise ConfigError(
            f"missing keys: a majority table needs {list(_MAJORITY_KEYS)}, a Best-of-N table "
            f"{list(_BEST_OF_N_KEYS)}; it has {sorted(arrays)}"
        )
    test_probs = arrays.get("cat_probs_test")
    test_answers = arrays.get("answers_test")
    return RecordedTable(
        cat_probs=_floats(arrays["cat_probs"], "cat_probs"),
        answers=_ints(arrays["answers"], "answers"),
        cost_per_prompt=_floats(arrays["cost_per_prompt"], "cost_per_prompt"),
        cat_probs_test=None if test_probs is None else _floats(test_probs, "cat_probs_test"),
        answers_test=None if test_answers is None else _ints(test_answers, "answers_test"),
    )


def _best_of_n_table(arrays: Mapping[str, npt.NDArray[np.generic]]) -> BestOfNTable:
    names = arrays["objectives"]
    if names.ndim != 1 or names.dtype.kind != "U":
        raise ConfigError(
            f"objectives must be a (K,) array of names, got {names.dtype} {names.shape}"
        )
    test_outcomes = arrays.get("bon_outcomes_test")
    test_probs = arrays.get("bon_probs_test")
    return BestOfNTable(
        bon_outcomes=_floats(arrays["bon_outcomes"], "bon_outcomes"),
        bon_probs=_floats(arrays["bon_probs"], "bon_probs"),
        objectives=tuple(str(name) for name in names.tolist()),
        cost_per_prompt=_floats(arrays["cost_per_prompt"], "cost_per_prompt"),
        bon_outcomes_test=(
            None if test_outcomes is None else _floats(test_outcomes, "bon_outcomes_test")
        ),
        bon_probs_test=None if test_probs is None else _floats(test_probs, "bon_probs_test"),
    )


def _floats(array: npt.NDArray[np.generic], key: str) -> npt.NDArray[np.float64]:
    if array.dtype.kind not in "fiub":
        raise ConfigError(f"{key} must be numeric, got dtype {array.dtype}")
    return np.asarray(array, dtype=np.float64)


def _ints(array: npt.NDArray[np.generic], key: str) -> npt.NDArray[np.int64]:
    if array.dtype.kind not in "iu":
        raise ConfigError(f"{key} must be integer category indices, got dtype {array.dtype}")
    return np.asarray(array, dtype=np.int64)


def save_table(table: AnyTable, path: str | Path) -> None:
    """Write ``table`` in the ``.npz`` contract, so ``iapo optimize --replay`` can read it."""
    arrays: dict[str, npt.NDArray[np.generic]]
    if isinstance(table, BestOfNTable):
        arrays = {
            "bon_outcomes": table.bon_outcomes,
            "bon_probs": table.bon_probs,
            "objectives": np.array(table.objectives, dtype=np.str_),
            "cost_per_prompt": table.cost_per_prompt,
        }
        if table.bon_outcomes_test is not None and table.bon_probs_test is not None:
            arrays["bon_outcomes_test"] = table.bon_outcomes_test
            arrays["bon_probs_test"] = table.bon_probs_test
    else:
        arrays = {
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
