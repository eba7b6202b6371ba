"""``iapo simulate --replay`` of a Best-of-N table: completions and the reward contract."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from iapo.simulator import (
    UNKNOWN_PROMPT_HEADER,
    Simulator,
    SimulatorStats,
    categorical_bon_table,
    create_app,
    make_simulator,
    save_table,
    serve_in_background,
    write_proxy_config,
    write_tasks,
)
from policies import BestOfNTable, read_toml
from policies.table import replay_prompt_texts
from proxy.config import load_config

OUTCOME = re.compile(r"\(outcome (\d+)\)")


@pytest.fixture
def table() -> BestOfNTable:
    return categorical_bon_table(4, prompts=4, queries=10, outcomes=5, objectives=2, test_queries=3)


@pytest.fixture
def replayed(table: BestOfNTable, tmp_path: Path) -> Simulator:
    save_table(table, tmp_path / "chat.npz")
    return make_simulator(tmp_path / "chat.npz", seed=1)


@pytest.fixture
async def served(replayed: Simulator, stats: SimulatorStats) -> AsyncIterator[str]:
    async with serve_in_background(create_app(replayed, stats=stats)) as url:
        yield url


async def test_completions_draw_outcomes_and_the_reward_endpoint_scores_them(
    table: BestOfNTable, replayed: Simulator, served: str, stats: SimulatorStats
) -> None:
    assert replayed.replayed == "reward"
    question = replayed.requests["train"][6]
    messages = [
        {"role": "system", "content": replay_prompt_texts(table)[2]},
        {"role": "user", "content": question},
    ]
    async with openai.AsyncOpenAI(base_url=served + "/v1", api_key="k", max_retries=0) as sdk:
        raw = await sdk.chat.completions.with_raw_response.create(
            model="iapo-sim",
            messages=messages,
            n=400,
            seed=3,  # type: ignore[arg-type]
        )
    assert UNKNOWN_PROMPT_HEADER not in raw.headers
    texts = [choice.message.content or "" for choice in raw.parse().choices]
    assert all(text.startswith("Style 2 reply to Request train-6") for text in texts)
    outcomes = [int(OUTCOME.findall(text)[0]) for text in texts]
    shares = np.bincount(outcomes, minlength=5) / len(outcomes)
    np.testing.assert_allclose(shares, table.bon_probs[2, 6], atol=0.09)

    async with httpx.AsyncClient() as http:
        reply = await http.post(
            served + "/v1/reward",
            json={
                "messages": messages,
                "candidates": texts[:20],
                "objectives": ["harmlessness", "helpfulness"],
            },
        )
    assert reply.status_code == 200
    scores = np.array(reply.json()["scores"])
    expected = table.bon_outcomes[2, 6, outcomes[:20]][:, ::-1]  # in the order asked
    np.testing.assert_allclose(scores, expected)
    assert stats.unknown_prompts == 0


async def test_an_unknown_prompt_warns_counts_and_says_so_in_a_header(
    replayed: Simulator, served: str, caplog: pytest.LogCaptureFixture
) -> None:
    messages = [
        {"role": "system", "content": "You are a pirate."},
        {"role": "user", "content": replayed.requests["train"][1]},
    ]
    with caplog.at_level(logging.WARNING, logger="iapo.simulator.engine"):
        async with httpx.AsyncClient() as http:
            for _ in range(2):
                response = await http.post(
                    served + "/v1/chat/completions",
                    json={"model": "iapo-sim", "messages": messages, "n": 2},
                )
                assert response.status_code == 200
                assert response.headers[UNKNOWN_PROMPT_HEADER] == "1"
                assert "A generic reply" in response.json()["choices"][0]["message"]["content"]
            health = (await http.get(served + "/healthz")).json()
    assert health == {"status": "ok", "unknown_prompts": 2}
    warnings = [r for r in caplog.records if "does not know" in r.getMessage()]
    assert len(warnings) == 1  # once per prompt text; every request is counted
    assert "You are a pirate." in warnings[0].getMessage()


def test_write_task_names_the_replayed_task_and_binds_the_reward_endpoint(
    replayed: Simulator, tmp_path: Path
) -> None:
    base = "http://127.0.0.1:8999"
    tasks = write_tasks(replayed, tmp_path / "sim", base, replay_name="chat")
    assert [t.spec.name for t in tasks] == ["math", "chat"]
    chat = tasks[1].spec
    assert chat.strategy == "best_of_n"
    assert chat.reward is not None
    assert chat.reward.url == base + "/v1/reward"
    assert [p.text for p in chat.prompts] == list(replayed.reward_prompts)
    task_file = read_toml(tasks[1].task_file, "task file")
    assert task_file["task"]["name"] == "chat"
    path = write_proxy_config(
        tmp_path / "sim", base, tasks[1:], replayed=(str(tmp_path / "chat.npz"), "chat")
    )
    assert "iapo optimize --replay" in path.read_text()
    config = load_config(path, env={})
    (task,) = config.tasks
    assert task.name == "chat"
    assert task.reward is not None
    assert task.reward.url == base + "/v1/reward"
    assert task.reward.objectives == ("helpfulness", "harmlessness")
