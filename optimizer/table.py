"""Recorded-distribution tables (``.npz``): loading, validation and re-splitting.

A table holds ``cat_probs`` (P, Q, C), ``answers`` (Q,) and ``cost_per_prompt`` (P,),
optionally ``cat_probs_test`` / ``answers_test``. The optimizer never reads the
probabilities: it only samples them through :class:`optimizer.replay.ReplaySampler`.

    table = load_table("MATH_final.npz")
    train, test = table.resplit(np.random.default_rng(0), test_share=0.2)
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import numpy.typing as npt

from policies.errors import ConfigError

__all__ = ["RecordedTable", "load_table"]


class RecordedTable(msgspec.Struct, frozen=True, dict=True):
    """A recorded table: ``cat_probs`` (P, Q, C), ``answers`` (Q,), ``cost_per_prompt`` (P,).

    ``cat_probs_test`` (P, Q', C) and ``answers_test`` (Q',) are the held-out split, if any.
    """

    cat_probs: npt.NDArray[np.float64]
    answers: npt.NDArray[np.int64]
    cost_per_prompt: npt.NDArray[np.float64]
    cat_probs_test: npt.NDArray[np.float64] | None = None
    answers_test: npt.NDArray[np.int64] | None = None

    @property
    def num_prompts(self) -> int:
        return int(self.cat_probs.shape[0])

    @property
    def num_queries(self) -> int:
        return int(self.cat_probs.shape[1])

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
        """Merge train and test, shuffle queries, split into (train, test) tables."""
        merged = self.merged()
        order = rng.permutation(merged.num_queries)
        n_test = round(test_share * merged.num_queries)
        test, train = order[:n_test], order[n_test:]
        return (
            RecordedTable(merged.cat_probs[:, train], merged.answers[train], self.cost_per_prompt),
            RecordedTable(merged.cat_probs[:, test], merged.answers[test], self.cost_per_prompt),
        )


def _validate(table: RecordedTable, source: str) -> None:
    probs, answers, cost = table.cat_probs, table.answers, table.cost_per_prompt
    if probs.ndim != 3:
        raise ConfigError(f"{source}: 'cat_probs' must be (P, Q, C), got shape {probs.shape}")
    p, q, c = probs.shape
    if min(p, q, c) < 1:
        raise ConfigError(f"{source}: 'cat_probs' has an empty axis: {probs.shape}")
    if answers.shape != (q,):
        raise ConfigError(f"{source}: 'answers' must be ({q},), got {answers.shape}")
    if cost.shape != (p,):
        raise ConfigError(f"{source}: 'cost_per_prompt' must be ({p},), got {cost.shape}")
    if not np.all(np.isfinite(probs)) or probs.min() < 0:
        raise ConfigError(f"{source}: 'cat_probs' must be finite and non-negative")
    sums = probs.sum(axis=-1)
    if not np.allclose(sums, 1.0, atol=1e-6):
        worst = np.unravel_index(np.argmax(np.abs(sums - 1)), sums.shape)
        raise ConfigError(
            f"{source}: 'cat_probs' rows must sum to 1; prompt {worst[0]}, query {worst[1]} "
            f"sums to {sums[worst]:.6f}"
        )
    if answers.min() < 0 or answers.max() >= c:
        raise ConfigError(f"{source}: 'answers' must be category indices in [0, {c})")
    if not np.all(np.isfinite(cost)) or cost.min() < 0:
        raise ConfigError(f"{source}: 'cost_per_prompt' must be finite and non-negative")


def load_table(path: str | Path) -> RecordedTable:
    """Read and validate a ``.npz`` table; ConfigError names the bad key."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: np.asarray(data[key]) for key in data.files}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read table {path}: {exc}") from None
    missing = {"cat_probs", "answers", "cost_per_prompt"} - set(arrays)
    if missing:
        raise ConfigError(f"{path}: missing key(s) {sorted(missing)}")
    test_probs = arrays.get("cat_probs_test")
    test_answers = arrays.get("answers_test")
    table = RecordedTable(
        arrays["cat_probs"].astype(np.float64),
        arrays["answers"].astype(np.int64),
        arrays["cost_per_prompt"].astype(np.float64),
        None if test_probs is None else test_probs.astype(np.float64),
        None if test_answers is None else test_answers.astype(np.int64),
    )
    _validate(table, str(path))
    return table
