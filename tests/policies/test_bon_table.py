from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from policies import BestOfNTable, ConfigError, RecordedTable, load_table, save_table


def _bon(rng: np.random.Generator, queries: int = 12, test: int = 4) -> BestOfNTable:
    def outcomes(q: int) -> np.ndarray:
        return rng.normal(size=(3, q, 5, 2))

    def probs(q: int) -> np.ndarray:
        return rng.dirichlet(np.ones(5), size=(3, q))

    return BestOfNTable(
        outcomes(queries),
        probs(queries),
        ("helpfulness", "harmlessness"),
        np.array([0.1, 0.2, 0.3]),
        outcomes(test),
        probs(test),
    )


def test_save_then_load_round_trips_a_best_of_n_table(
    rng: np.random.Generator, tmp_path: Path
) -> None:
    table = _bon(rng)
    save_table(table, tmp_path / "bon.npz")
    loaded = load_table(tmp_path / "bon.npz")
    assert isinstance(loaded, BestOfNTable)
    assert loaded.objectives == ("helpfulness", "harmlessness")
    assert (loaded.num_prompts, loaded.num_queries, loaded.num_objectives) == (3, 12, 2)
    assert loaded.bon_outcomes_test is not None
    assert table.bon_outcomes_test is not None
    np.testing.assert_array_equal(loaded.bon_outcomes, table.bon_outcomes)
    np.testing.assert_array_equal(loaded.bon_probs, table.bon_probs)
    np.testing.assert_array_equal(loaded.bon_outcomes_test, table.bon_outcomes_test)
    assert loaded.questions("test") == 4


def test_merged_resplit_and_take_keep_every_query_once(rng: np.random.Generator, seed: int) -> None:
    table = _bon(rng)
    merged = table.merged()
    assert merged.num_queries == 16
    assert merged.bon_probs_test is None
    train, test = table.resplit(np.random.default_rng(seed), test_share=0.25)
    assert (train.num_queries, test.num_queries) == (12, 4), f"seed {seed}"
    rows = {merged.bon_outcomes[:, q].tobytes() for q in range(16)}
    seen = [s.bon_outcomes[:, q].tobytes() for s in (train, test) for q in range(s.num_queries)]
    assert sorted(seen) == sorted(rows), f"seed {seed}"
    picked = table.take(np.array([5, 0, 5]))
    np.testing.assert_array_equal(picked.bon_probs[:, 1], table.bon_probs[:, 0])
    assert picked.num_queries == 3
    assert picked.bon_outcomes_test is None


def test_scores_weight_the_objectives(rng: np.random.Generator) -> None:
    table = _bon(rng)
    scores = table.scores({"helpfulness": 1.0, "harmlessness": 0.2})
    expected = table.bon_outcomes[..., 0] + 0.2 * table.bon_outcomes[..., 1]
    np.testing.assert_allclose(scores, expected)
    np.testing.assert_allclose(table.scores(None), table.bon_outcomes.mean(axis=-1))
    assert table.scores(None, "test").shape == (3, 4, 5)
    with pytest.raises(ConfigError, match="unknown objectives"):
        table.scores({"honesty": 1.0})


def test_recorded_table_take_keeps_the_chosen_queries(rng: np.random.Generator) -> None:
    probs = rng.dirichlet(np.ones(4), size=(2, 6))
    table = RecordedTable(probs, np.arange(6) % 4, np.ones(2))
    picked = table.take(np.array([4, 1]))
    np.testing.assert_array_equal(picked.answers, [0, 1])
    np.testing.assert_array_equal(picked.cat_probs[:, 0], probs[:, 4])
    with pytest.raises(ConfigError, match="query indices"):
        table.take(np.array([6]))


def test_bad_best_of_n_arrays_are_named(rng: np.random.Generator) -> None:
    good = _bon(rng)
    outcomes, probs, names, cost = good.bon_outcomes, good.bon_probs, good.objectives, np.ones(3)
    with pytest.raises(ConfigError, match=r"bon_outcomes must be a non-empty \(P, Q, M, K\)"):
        BestOfNTable(outcomes[..., 0], probs, names, cost)
    with pytest.raises(ConfigError, match="bon_probs has shape"):
        BestOfNTable(outcomes, probs[:, :, :4], names, cost)
    bad = probs.copy()
    bad[2, 1, 0] += 0.5
    with pytest.raises(ConfigError, match=r"bon_probs\[2, 1\] sums to"):
        BestOfNTable(outcomes, bad, names, cost)
    with pytest.raises(ConfigError, match="objectives must be 2 distinct"):
        BestOfNTable(outcomes, probs, ("a",), cost)
    with pytest.raises(ConfigError, match="objectives must be 2 distinct"):
        BestOfNTable(outcomes, probs, ("a", "a"), cost)
    with pytest.raises(ConfigError, match="cost_per_prompt"):
        BestOfNTable(outcomes, probs, names, np.ones(2))
    nan = outcomes.copy()
    nan[0, 0, 0, 0] = np.nan
    with pytest.raises(ConfigError, match="bon_outcomes must be finite"):
        BestOfNTable(nan, probs, names, cost)
    with pytest.raises(ConfigError, match="both bon_outcomes_test and bon_probs_test"):
        BestOfNTable(outcomes, probs, names, cost, bon_outcomes_test=outcomes)
    with pytest.raises(ConfigError, match="bon_outcomes_test has shape"):
        BestOfNTable(outcomes, probs, names, cost, outcomes[:2], probs[:2])


def test_loader_names_the_missing_key_of_either_kind(tmp_path: Path) -> None:
    path = tmp_path / "t.npz"
    np.savez(path, bon_outcomes=np.zeros((1, 1, 2, 1)), bon_probs=np.full((1, 1, 2), 0.5))
    with pytest.raises(ConfigError, match=r"Best-of-N table, but missing keys \['objectives', "):
        load_table(path)
    np.savez(path, cat_probs=np.full((1, 1, 2), 0.5), cost_per_prompt=np.ones(1))
    with pytest.raises(ConfigError, match=r"majority table, but missing keys \['answers'\]"):
        load_table(path)
    np.savez(path, cost_per_prompt=np.ones(1))
    with pytest.raises(ConfigError, match=r"a Best-of-N table .*'bon_outcomes'"):
        load_table(path)
    np.savez(
        path,
        cat_probs=np.full((1, 1, 2), 0.5),
        answers=np.zeros(1, np.int64),
        bon_probs=np.full((1, 1, 2), 0.5),
        cost_per_prompt=np.ones(1),
    )
    with pytest.raises(ConfigError, match="keys of both kinds"):
        load_table(path)
    np.savez(
        path,
        bon_outcomes=np.zeros((1, 1, 2, 1)),
        bon_probs=np.full((1, 1, 2), 0.5),
        objectives=np.array([1.0]),
        cost_per_prompt=np.ones(1),
    )
    with pytest.raises(ConfigError, match=f"{path}: objectives must be a"):
        load_table(path)
