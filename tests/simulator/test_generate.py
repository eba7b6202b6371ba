"""Synthetic tables of any shape: ``iapo simulate --generate``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from iapo.cli import main
from iapo.simulator import categorical_bon_table, load_table, majority_table
from optimizer import best_of_n_exact, majority_credit_exact
from policies import BestOfNTable, ConfigError, RecordedTable


def test_best_of_n_tables_have_the_asked_shape_and_are_seeded() -> None:
    table = categorical_bon_table(
        5, prompts=4, queries=30, outcomes=7, objectives=3, test_queries=9
    )
    assert table.bon_outcomes.shape == (4, 30, 7, 3)
    assert table.bon_outcomes_test is not None
    assert table.bon_outcomes_test.shape == (4, 9, 7, 3)
    assert table.objectives == ("helpfulness", "harmlessness", "honesty")
    assert np.all((table.bon_outcomes >= 0) & (table.bon_outcomes <= 1))
    assert len(set(table.cost_per_prompt.tolist())) == 4  # prompts differ in cost
    again = categorical_bon_table(
        5, prompts=4, queries=30, outcomes=7, objectives=3, test_queries=9
    )
    np.testing.assert_array_equal(again.bon_probs, table.bon_probs)
    other = categorical_bon_table(6, prompts=4, queries=30, outcomes=7, objectives=3)
    assert not np.array_equal(other.bon_probs, table.bon_probs)
    assert other.bon_probs_test is None
    assert categorical_bon_table(0, objectives=6).objectives[4:] == ("objective5", "objective6")
    assert categorical_bon_table(0, objectives=("a", "b")).objectives == ("a", "b")


def test_best_of_n_prompts_gain_differently_from_n() -> None:
    table = categorical_bon_table(1, prompts=8, queries=100)
    curve = best_of_n_exact(table.scores(None), table.bon_probs, 32).mean(axis=1)  # (P, N)
    gain = curve[:, -1] - curve[:, 0]
    assert gain.max() > 2 * gain.min()  # high-spread prompts harvest Best-of-N more


@pytest.mark.parametrize("seed", range(3))
def test_majority_prompts_rank_differently_at_n1_and_large_n(seed: int) -> None:
    table = majority_table(seed, prompts=6, queries=120, skill_spread=0.0)
    credit = majority_credit_exact(table.cat_probs, table.answers, 16).mean(axis=1)  # (P, N)
    confident, careful = credit[0::2], credit[1::2]
    assert confident[:, 0].mean() > careful[:, 0].mean(), f"seed {seed}"
    assert careful[:, -1].mean() > confident[:, -1].mean(), f"seed {seed}"
    assert len(set(table.cost_per_prompt.tolist())) == 6


def test_the_skill_spread_knob_sets_how_close_prompts_are() -> None:
    def gap(spread: float) -> float:
        table = majority_table(2, prompts=8, queries=300, skill_spread=spread)
        accuracy = table.cat_probs[:, np.arange(300), table.answers].mean(axis=1)
        return float(accuracy.max() - accuracy.min())

    assert gap(1.5) > gap(0.0)


def test_bad_shapes_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="prompts must be at least 1"):
        categorical_bon_table(0, prompts=0)
    with pytest.raises(ConfigError, match="categories must be at least 2"):
        majority_table(0, categories=1)
    with pytest.raises(ConfigError, match="at least one objective"):
        categorical_bon_table(0, objectives=0)


def test_cli_generates_both_kinds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bon, maj = tmp_path / "bon.npz", tmp_path / "maj.npz"
    argv = ["simulate", "--generate", "bon", "--prompts", "3", "--queries", "12"]
    assert (
        main([*argv, "--outcomes", "4", "--objectives", "2", "--seed", "9", "--out", str(bon)]) == 0
    )
    assert "wrote" in capsys.readouterr().out
    table = load_table(bon)
    assert isinstance(table, BestOfNTable)
    assert table.bon_outcomes.shape == (3, 12, 4, 2)
    argv = ["simulate", "--generate", "majority", "--prompts", "4", "--queries", "10"]
    assert main([*argv, "--test-queries", "5", "--categories", "3", "--out", str(maj)]) == 0
    majority = load_table(maj)
    assert isinstance(majority, RecordedTable)
    assert majority.cat_probs.shape == (4, 10, 3)
    assert majority.questions("test") == 5
    assert main(["simulate", "--generate", "bon"]) == 2
    assert "--generate needs --out" in capsys.readouterr().err
