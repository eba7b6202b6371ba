from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from iapo.simulator import RecordedTable, load_table, save_table, synthetic_majority_table
from policies.errors import ConfigError

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "MATH_final.npz"


def test_save_then_load_gives_the_same_arrays(tmp_path: Path) -> None:
    table = synthetic_majority_table(3)
    save_table(table, tmp_path / "sub" / "table.npz")
    loaded = load_table(tmp_path / "sub" / "table.npz")
    assert loaded.cat_probs_test is not None
    assert table.cat_probs_test is not None
    np.testing.assert_array_equal(loaded.cat_probs, table.cat_probs)
    np.testing.assert_array_equal(loaded.answers, table.answers)
    np.testing.assert_array_equal(loaded.cost_per_prompt, table.cost_per_prompt)
    np.testing.assert_array_equal(loaded.cat_probs_test, table.cat_probs_test)
    assert loaded.questions("test") == 100


def test_rows_that_do_not_sum_to_one_are_named() -> None:
    probs = np.full((2, 3, 4), 0.25)
    probs[1, 2, 0] = 0.5
    with pytest.raises(ConfigError, match=r"cat_probs\[1, 2\] sums to 1.25"):
        RecordedTable(probs, np.zeros(3, np.int64), np.ones(2))


def test_bad_shapes_and_gold_are_refused() -> None:
    probs = np.full((2, 3, 4), 0.25)
    with pytest.raises(ConfigError, match="cost_per_prompt"):
        RecordedTable(probs, np.zeros(3, np.int64), np.ones(3))
    with pytest.raises(ConfigError, match="answers must be category indices"):
        RecordedTable(probs, np.array([0, 1, 4]), np.ones(2))
    with pytest.raises(ConfigError, match="both"):
        RecordedTable(probs, np.zeros(3, np.int64), np.ones(2), cat_probs_test=probs)


def test_missing_keys_and_files_are_config_errors(tmp_path: Path) -> None:
    np.savez(tmp_path / "t.npz", cat_probs=np.full((1, 1, 2), 0.5))
    with pytest.raises(ConfigError, match="missing keys"):
        load_table(tmp_path / "t.npz")
    with pytest.raises(ConfigError, match="cannot read table"):
        load_table(tmp_path / "absent.npz")


@pytest.mark.skipif(not DATA.exists(), reason="recorded MATH table not present")
def test_the_recorded_math_table_loads() -> None:
    table = load_table(DATA)
    assert (table.num_prompts, table.questions("train"), table.num_categories) == (25, 252, 5)
    assert table.questions("test") == 64
