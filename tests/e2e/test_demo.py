"""``iapo demo`` end to end, reduced in size: real servers on loopback, the real SDK."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import msgspec
import pytest

from iapo.cli import main
from iapo.demo import DemoReport
from iapo.simulator import save_table, synthetic_majority_table
from policies.policy import load_policy

pytestmark = pytest.mark.e2e


def _run(tmp_path: Path, *extra: str) -> DemoReport:
    threads = threading.active_count()
    code = main(["demo", "--quick", "--requests", "60", "--workdir", str(tmp_path), *extra])
    assert code == 0
    # everything it started has stopped (database threads may take a moment to join)
    deadline = time.monotonic() + 5.0
    while threading.active_count() > threads and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == threads, threading.enumerate()
    return msgspec.json.decode((tmp_path / "summary.json").read_bytes(), type=DemoReport)


def test_quick_demo_serves_optimized_tiers_that_beat_prompt_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = _run(tmp_path)
    out = capsys.readouterr().out
    assert "math (majority vote)" in out
    assert "assist (Best-of-N)" in out

    assert [t.task for t in report.tasks] == ["math", "assist"]
    for task in report.tasks:
        assert task.spent == task.budget == 1200
        policy = load_policy(task.policy_file)
        assert policy.task == task.task
        baseline = load_policy(Path(task.policy_file).with_name(f"{task.task}-prompt-only.json"))
        assert all(choice.n == 1 for choice in baseline.tiers.values())
        assert Path(task.report_file).read_text(encoding="utf-8").lstrip().startswith("<svg")

    rows = {(r.task, r.tier): r for r in report.rows}
    assert set(rows) == {
        ("math", "economy"),
        ("math", "standard"),
        ("math", "premium"),
        ("assist", "economy"),
        ("assist", "helpful"),
        ("assist", "safe"),
    }
    for row in report.rows:
        assert row.iapo.requests == row.baseline.requests == 60
        assert row.iapo.failed == row.baseline.failed == 0
        # the proxy drew the policy's N for every request
        assert row.iapo.samples == row.n
        assert row.baseline.samples == 1
    # tiers trade quality for cost: the cheap tier never draws more than the others
    assert rows["math", "economy"].n <= rows["math", "premium"].n
    assert rows["assist", "economy"].n <= min(rows["assist", "helpful"].n, rows["assist", "safe"].n)
    assert rows["math", "premium"].iapo.cost > rows["math", "economy"].iapo.cost
    # IAPO beats prompt-only on the same requests: measured, and exactly
    measured = sum(r.iapo.utility - r.baseline.utility for r in report.rows)
    exact = sum(r.exact.chosen - r.exact.prompt_only for r in report.rows)
    assert measured > 0.2, report.rows
    assert exact > 0.2, report.rows
    assert rows["math", "premium"].exact.chosen > rows["math", "premium"].exact.prompt_only

    # both policies went to the store, and the proxy logged every request
    with sqlite3.connect(tmp_path / "policies.sqlite") as db:
        tasks = {row[0] for row in db.execute("SELECT task FROM active_policies")}
    assert tasks == {"math", "math-prompt-only", "assist", "assist-prompt-only"}
    assert (tmp_path / "requests.sqlite").exists()


def test_demo_replays_a_recorded_table(tmp_path: Path) -> None:
    table = tmp_path / "table.npz"
    save_table(synthetic_majority_table(21), table)
    report = _run(tmp_path / "work", "--replay", str(table), "--budget", "600")
    math = [r for r in report.rows if r.task == "math"]
    assert len(math) == 3
    assert report.tasks[0].spent == 600
    assert all(r.iapo.failed == 0 for r in math)
