from __future__ import annotations

import numpy as np
import pytest

from policies import ConfigError, RecordedTable


def _table(rng: np.random.Generator, queries: int, test: int) -> RecordedTable:
    def probs(q: int) -> np.ndarray:
        return rng.dirichlet(np.ones(4), size=(3, q))

    return RecordedTable(
        probs(queries),
        rng.integers(0, 4, queries),
        np.array([0.1, 0.2, 0.3]),
        probs(test),
        rng.integers(0, 4, test),
    )


def test_resplit_partitions_every_query_once(rng: np.random.Generator, seed: int) -> None:
    table = _table(rng, 40, 10)
    merged = table.merged()
    train, test = table.resplit(np.random.default_rng(seed), test_share=0.2)
    assert (train.num_queries, test.num_queries) == (40, 10), f"seed {seed}"
    assert train.cat_probs_test is None
    assert test.cat_probs_test is None
    # every merged query lands in exactly one side: match rows by their distributions
    rows = {merged.cat_probs[:, q].tobytes(): merged.answers[q] for q in range(50)}
    seen = [t.cat_probs[:, q].tobytes() for t in (train, test) for q in range(t.num_queries)]
    assert sorted(seen) == sorted(rows), f"seed {seed}"
    for side in (train, test):
        for q in range(side.num_queries):
            assert rows[side.cat_probs[:, q].tobytes()] == side.answers[q]


def test_cost_must_be_one_per_prompt(rng: np.random.Generator) -> None:
    table = _table(rng, 5, 2)
    with pytest.raises(ConfigError, match="cost_per_prompt"):
        RecordedTable(table.cat_probs, table.answers, np.ones(2))
