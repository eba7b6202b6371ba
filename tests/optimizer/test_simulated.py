"""A replay run and a live run through the simulator, on the same table, must agree."""

from __future__ import annotations

from pathlib import Path

import httpx
import msgspec
import numpy as np
import pytest

from optimizer import HttpSampler, ReplaySampler, optimize, replay_task
from policies.taskfile import load_dataset, load_task_file
from policies.tiers import Tier

from .conftest import deceiving_table, save_table

simulator = pytest.importorskip("iapo.simulator")

TIERS = (Tier("economy", cost_weight=5.0), Tier("premium", cost_weight=0.0))


async def test_replay_and_live_through_the_simulator_agree(tmp_path: Path, seed: int) -> None:
    table = deceiving_table(40)
    path = save_table(table, tmp_path / "deceive.npz")
    sim = simulator.make_simulator(path, seed=seed)
    written = simulator.write_tasks(sim, tmp_path / "tasks", "http://simulator.test")
    task_file, dataset = load_task_file(written[0].task_file)
    task = msgspec.structs.replace(task_file.task, n_max=16, tiers=TIERS, default_tier="premium")
    rows = load_dataset(dataset, task.extractor)
    assert len(rows) == table.num_queries

    budget = 3000
    transport = httpx.ASGITransport(app=simulator.create_app(sim))
    async with httpx.AsyncClient(transport=transport, base_url="http://simulator.test") as client:
        sampler = HttpSampler(task, task_file.upstream, rows, client=client, run_key="agree")
        live = await optimize(task, sampler, budget, np.random.default_rng(seed))
    rng = np.random.default_rng(seed)
    replay_sampler = ReplaySampler(table, rng)
    replay = await optimize(replay_task(table, tiers=TIERS, n_max=16), replay_sampler, budget, rng)

    assert live.spent == replay.spent == sampler.paid == replay_sampler.samples_drawn == budget
    for name in ("economy", "premium"):
        a, b = live.policy.tiers[name], replay.policy.tiers[name]
        assert a.prompt.id == b.prompt.id, f"{name}: live {a.prompt.id}, replay {b.prompt.id}"
        assert a.expected_utility == pytest.approx(b.expected_utility, abs=0.08), name
    assert live.policy.tiers["premium"].prompt.id == "1", f"seed {seed}"
    # The live cost of a sample (usage × price) is the table's cost of that prompt.
    live_cost = live.policy.tiers["premium"].expected_cost / live.policy.tiers["premium"].n
    assert live_cost == pytest.approx(table.cost_per_prompt[1], rel=0.05)
