from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from optimizer import RecordedTable

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "MATH_final.npz"


def deceiving_table(queries: int = 60) -> RecordedTable:
    """4 prompts, 5 categories, gold = category 0 on every query.

    - prompt 0, the deceiver: best at N=1 (0.79) but on 30% of queries one wrong
      answer dominates (0.7), so its large-N accuracy falls to 0.7;
    - prompt 1: 0.6 correct everywhere, wrong answers spread thin: near 1.0 at large N;
    - prompts 2, 3: poor (0.3 correct, one dominant wrong answer 0.5).
    """
    probs = np.zeros((4, queries, 5))
    hard = np.arange(queries) < round(0.3 * queries)
    probs[0, ~hard, 0] = 1.0
    probs[0, hard] = [0.3, 0.7, 0.0, 0.0, 0.0]
    probs[1] = [0.6, 0.1, 0.1, 0.1, 0.1]
    probs[2:] = [0.3, 0.5, 0.1, 0.1, 0.0]
    cost = np.array([0.01, 0.01, 0.01, 0.01])
    return RecordedTable(probs, np.zeros(queries, dtype=np.int64), cost)


def random_table(
    rng: np.random.Generator, prompts: int, queries: int, categories: int
) -> RecordedTable:
    probs = rng.dirichlet(np.ones(categories) * 0.5, size=(prompts, queries))
    answers = rng.integers(categories, size=queries)
    return RecordedTable(probs, answers, rng.uniform(0.001, 0.02, size=prompts))


def save_table(table: RecordedTable, path: Path) -> Path:
    np.savez(
        path,
        cat_probs=table.cat_probs,
        answers=table.answers,
        cost_per_prompt=table.cost_per_prompt,
    )
    return path


@pytest.fixture
def deceiving() -> RecordedTable:
    return deceiving_table()


@pytest.fixture
def math_path() -> Path:
    if not DATA.exists():
        pytest.skip(f"recorded table {DATA} is not available")
    return DATA
