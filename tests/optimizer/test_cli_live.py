"""``iapo optimize --task`` against a real simulator server on 127.0.0.1, resumed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from iapo.cli import main
from policies.policy import load_policy

from .conftest import deceiving_table, save_table, served_in_thread

simulator = pytest.importorskip("iapo.simulator")

pytestmark = pytest.mark.e2e


@pytest.fixture
def simulator_url(tmp_path: Path) -> Iterator[tuple[str, object]]:
    """A simulator of the deceiving table served from a thread; yields (URL, simulator)."""
    sim = simulator.make_simulator(save_table(deceiving_table(40), tmp_path / "t.npz"), seed=7)
    with served_in_thread(simulator.create_app(sim)) as url:
        yield url, sim


def test_optimize_task_runs_live_and_a_rerun_pays_nothing(
    tmp_path: Path, simulator_url: tuple[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    url, sim = simulator_url
    written = simulator.write_tasks(sim, tmp_path / "tasks", url)
    task_file = written[0].task_file
    out = tmp_path / "policy.json"
    args = ["optimize", "--task", str(task_file), "--budget", "600", "--n-max", "8"]
    args += ["--tiers", "premium=0", "--out", str(out)]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "600 newly paid, 0 read from the cache" in first
    policy = load_policy(out)
    assert policy.budget.spent == 600
    assert policy.tiers["premium"].strategy == "majority"
    assert (tmp_path / "policy.samples.sqlite").exists()

    assert main(args) == 0  # same arguments: every sample comes from the cache
    second = capsys.readouterr().out
    assert "0 newly paid, 600 read from the cache" in second
    again = load_policy(out)
    assert again.tiers["premium"].prompt == policy.tiers["premium"].prompt
    assert again.tiers["premium"].n == policy.tiers["premium"].n
