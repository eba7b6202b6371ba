"""The empirical-Bayes credit table: exact, built in memory, on disk only when asked."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from iapo.cli import main
from optimizer import _bayes
from policies.policy import load_policy

from .conftest import deceiving_table, save_table


@pytest.fixture(autouse=True)
def fresh_table() -> Iterator[None]:
    """Each test builds (or loads) the table itself; later tests get it rebuilt."""
    _bayes._credit_table.cache_clear()
    yield
    _bayes._credit_table.cache_clear()


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_optimize_writes_nothing_to_home_or_a_cache_unless_asked(
    cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    table = save_table(deceiving_table(), tmp_path / "deceive.npz")
    args = ["optimize", "--replay", str(table), "--budget", "600", "--n-max", "8"]
    assert main([*args, "--quiet", "--out", str(work / "policy.json")]) == 0
    assert load_policy(work / "policy.json").budget.spent == 600
    assert _bayes._credit_table.cache_info().misses == 1, "the default method built the table"
    home = cache_dir.parent
    assert _files(home) == [], "nothing under HOME (nor XDG_CACHE_HOME inside it)"
    assert _files(work) == [work / "policy.estimates.json", work / "policy.json"]


def test_the_table_is_kept_in_iapo_cache_dir_when_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(_bayes.CACHE_DIR_ENV, str(tmp_path / "iapo-cache"))
    built = _bayes._credit_table(6)
    assert [p.name for p in _files(tmp_path)] == [f"eb-credit-v1-{_bayes.STEP}-6.npy"]

    def must_not_build(k_max: int) -> np.ndarray:
        raise AssertionError("the stored table should have been read")

    _bayes._credit_table.cache_clear()
    monkeypatch.setattr(_bayes, "_build_credit_table", must_not_build)
    np.testing.assert_array_equal(_bayes._credit_table(6), built)


def test_an_unwritable_cache_dir_only_costs_the_rebuild(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(_bayes.CACHE_DIR_ENV, str(blocker / "cache"))
    table = _bayes._credit_table(5)
    assert table.shape == (_bayes._grid().shape[0], 5)
    assert _files(tmp_path) == [blocker]


def test_the_table_is_the_exact_credit_by_enumeration(seed: int) -> None:
    """Every sequence of k ≤ 5 answers (gold, w1, w2, a fresh one-off) weighed exactly."""
    grid, table = _bayes._grid(), _bayes._build_credit_table(5)
    rng = np.random.default_rng(seed)
    for j in [0, len(grid) - 1, *rng.choice(len(grid), 8, replace=False)]:
        for k in range(1, 6):
            expected = 0.0
            for draw in itertools.product(range(4), repeat=k):
                prob = float(np.prod(grid[j, list(draw)]))
                counts = [draw.count(0), draw.count(1), draw.count(2)]
                one_offs = draw.count(3)
                top = max(*counts, 1 if one_offs else 0)
                if counts[0] == top:
                    tied = counts.count(top) + (one_offs if top == 1 else 0)
                    expected += prob / tied
            assert table[j, k - 1] == pytest.approx(expected, abs=1e-12), (
                f"θ={grid[j]} k={k} seed={seed}"
            )
