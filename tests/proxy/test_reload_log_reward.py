"""Policy hot reload, the request log, and the reward-service adapters."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import httpx
import msgspec
import numpy as np
import pytest

from policies import (
    ConfigError,
    RewardSpec,
    SqlitePolicyStore,
    UpstreamError,
    encode_policy,
    open_database,
    save_policy,
)
from proxy.config import RequestLogConfig
from proxy.requestlog import REQUEST_LOG_MIGRATIONS, RequestLog, RequestRecord
from proxy.reward import RewardScorer
from proxy.upstream import UpstreamClient
from tests.proxy.conftest import chat_body, make_config, make_policy, running_proxy
from tests.proxy.scripted import ScriptedUpstream, mock_client

TASK = {"X-IAPO-Task": "math"}


async def wait_for(condition: object, seconds: float = 5.0) -> bool:
    for _ in range(int(seconds / 0.02)):
        if condition():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.02)
    return False


async def test_policy_file_hot_reload_and_corrupt_file_rejected(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    upstream = ScriptedUpstream()
    config = make_config(tmp_path)
    policy_file = Path(config.tasks[0].policy_file or "")
    async with running_proxy(config, upstream) as (client, service):
        assert service.registry is not None
        first = service.registry.tasks["math"].label
        save_policy(make_policy(ns={"economy": 1, "standard": 6, "premium": 8}), policy_file)
        assert await wait_for(lambda: service.registry.tasks["math"].label != first)  # type: ignore[union-attr]
        second = service.registry.tasks["math"].label
        await client.post("/v1/chat/completions", json=chat_body(), headers=TASK)
        # a half-written file: rejected, the previous policy keeps serving
        policy_file.write_bytes(encode_policy(make_policy())[:40])  # noqa: ASYNC240
        assert await wait_for(lambda: "new policy rejected" in caplog.text)
        response = await client.post("/v1/chat/completions", json=chat_body(), headers=TASK)
        metrics = (await client.get("/metrics")).text
    assert upstream.sample_ns() == [6, 6]
    assert response.headers["x-iapo-policy"] == second
    assert 'iapo_policy_n{task="math",tier="standard"} 6.0' in metrics


async def test_store_bound_task_follows_the_active_revision(tmp_path: Path) -> None:
    store_path = tmp_path / "policies.sqlite"
    async with await SqlitePolicyStore.open(store_path) as store:
        await store.put(make_policy())
    config = make_config(
        tmp_path, extra={"store": {"path": str(store_path), "poll_interval_s": 0.05}}
    )
    task = msgspec.structs.replace(config.tasks[0], policy_file=None)
    config = msgspec.structs.replace(config, tasks=(task,))
    upstream = ScriptedUpstream()
    async with running_proxy(config, upstream) as (client, service):
        before = await client.post("/v1/chat/completions", json=chat_body(), headers=TASK)
        async with await SqlitePolicyStore.open(store_path) as store:
            await store.put(make_policy(ns={"standard": 2}))
        assert await wait_for(lambda: service.registry.tasks["math"].revision == 2)  # type: ignore[union-attr]
        after = await client.post("/v1/chat/completions", json=chat_body(), headers=TASK)
    assert before.headers["x-iapo-policy"].startswith("1/")
    assert after.headers["x-iapo-policy"].startswith("2/")
    assert upstream.sample_ns() == [4, 2]


async def test_request_log_rows_and_content_switch(tmp_path: Path) -> None:
    upstream = ScriptedUpstream(["12", "12", "7", "x"])
    config = make_config(
        tmp_path,
        extra={
            "request_log": {
                "path": str(tmp_path / "log.sqlite"),
                "log_content": True,
                "flush_interval_s": 0.01,
            }
        },
        request_log=False,
    )
    async with running_proxy(config, upstream) as (client, _):
        await client.post("/v1/chat/completions", json=chat_body("secret question"), headers=TASK)
        await client.post(
            "/v1/chat/completions", json=chat_body(), headers={**TASK, "X-IAPO-Tier": "gold"}
        )
    with sqlite3.connect(tmp_path / "log.sqlite") as db:
        db.row_factory = sqlite3.Row
        rows = [dict(r) for r in db.execute("SELECT * FROM request_log")]
        journal = db.execute("PRAGMA journal_mode").fetchone()[0]
    assert journal == "wal"
    assert len(rows) == 1  # the refused request never reached a task
    row = rows[0]
    assert (row["task"], row["tier"], row["strategy"], row["status"]) == (
        "math",
        "standard",
        "majority",
        200,
    )
    assert (row["samples_launched"], row["samples_used"], row["n_policy"]) == (4, 4, 4)
    assert row["completion_tokens"] == 20
    assert row["cost"] == pytest.approx(0.05)
    assert row["agreement"] == pytest.approx(0.5)
    assert "secret question" in row["content"]


async def test_request_log_has_no_content_by_default(tmp_path: Path) -> None:
    async with running_proxy(make_config(tmp_path), ScriptedUpstream()) as (client, _):
        await client.post("/v1/chat/completions", json=chat_body("secret question"), headers=TASK)
    with sqlite3.connect(tmp_path / "requests.sqlite") as db:
        assert db.execute("SELECT content FROM request_log").fetchall() == [(None,)]
        dump = "\n".join(db.iterdump())
    assert "secret question" not in dump


def reward_client(handler: object) -> UpstreamClient:
    return mock_client(handler, name="reward", url="http://rm.test", max_concurrency=4)  # type: ignore[arg-type]


def deadline() -> float:
    return asyncio.get_running_loop().time() + 5


MESSAGES = [{"role": "system", "content": "s"}, {"role": "user", "content": "2+2?"}]


async def test_iapo_contract_reorders_objectives_and_marks_unscored_rows() -> None:
    seen: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"objectives": ["b", "a"], "scores": [[1, 2], [3, 4], [5]]})

    scorer = RewardScorer(
        RewardSpec(url="http://rm.test/score", objectives=("a", "b")), reward_client(handler)
    )
    matrix = await scorer.score(MESSAGES, ["x", "y", "z"], deadline=deadline())
    assert seen[0]["candidates"] == ["x", "y", "z"]
    assert seen[0]["messages"] == MESSAGES
    np.testing.assert_array_equal(matrix[:2], [[2, 1], [4, 3]])
    assert np.isnan(matrix[2]).all()


async def test_vllm_score_and_pooling_adapters() -> None:
    bodies: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        if request.url.path.endswith("/score"):
            return httpx.Response(
                200, json={"data": [{"index": 1, "score": 0.9}, {"index": 0, "score": 0.1}]}
            )
        # /pooling: one conversation per call; a reward per token (last counts) or one value
        answer = body["messages"][-1]["content"]
        data = {"a": [[0.1], [0.7]], "b": 0.3}.get(answer)
        if data is None:
            return httpx.Response(500, json={"error": {"message": "boom"}})
        return httpx.Response(200, json={"data": [{"index": 0, "data": data}]})

    client = reward_client(handler)
    score = RewardScorer(RewardSpec(url="http://rm.test/score", kind="vllm", model="rm"), client)
    pooling = RewardScorer(RewardSpec(url="http://rm.test/pooling", kind="vllm"), client)
    assert (await score.score(MESSAGES, ["a", "b"], deadline=deadline())).tolist() == [[0.1], [0.9]]
    assert bodies[0] == {"text_1": "2+2?", "text_2": ["a", "b"], "model": "rm"}
    bodies.clear()
    matrix = await pooling.score(MESSAGES, ["a", "b", "c"], deadline=deadline())
    assert matrix[:2].tolist() == [[0.7], [0.3]]
    assert np.isnan(matrix[2, 0])  # its call failed: unscored, the others still count
    # the reward model's chat template applies: the conversation plus the candidate's turn
    assert sorted(bodies, key=str)[0] == {
        "messages": [*MESSAGES, {"role": "assistant", "content": "a"}]
    }
    with pytest.raises(UpstreamError):
        await pooling.score(MESSAGES, ["c", "d"], deadline=deadline())


async def test_malformed_reward_response_is_an_upstream_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"objectives": ["a"], "scores": [[1.0]]})

    scorer = RewardScorer(
        RewardSpec(url="http://rm.test/r", objectives=("a",)), reward_client(handler)
    )
    with pytest.raises(UpstreamError, match="1 score rows for 2 candidates"):
        await scorer.score(MESSAGES, ["x", "y"], deadline=deadline())


async def test_best_of_n_falls_back_to_a_sample_when_the_reward_service_fails(
    tmp_path: Path,
) -> None:
    upstream = ScriptedUpstream(["first", "second"])
    reward = RewardSpec(url="http://reward.test/reward")
    broken = httpx.MockTransport(lambda request: httpx.Response(500, json={"error": "down"}))
    policy = make_policy(ns={"standard": 2}, strategy="best_of_n", reward=reward)
    config = make_config(tmp_path, policy)
    async with running_proxy(config, upstream, transports={"reward": broken}) as (client, _):
        response = await client.post("/v1/chat/completions", json=chat_body(), headers=TASK)
        metrics = (await client.get("/metrics")).text
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "first"
    assert "x-iapo-score" not in response.headers
    assert response.headers["x-iapo-unranked"] == "reward service failed (server_error)"
    assert 'iapo_upstream_requests_total{status_class="5xx",upstream="reward"} 1.0' in metrics


async def test_policy_for_another_task_is_rejected_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path)
    policy_file = Path(config.tasks[0].policy_file or "")
    async with running_proxy(config, ScriptedUpstream()) as (client, service):
        assert service.registry is not None
        label = service.registry.tasks["math"].label
        save_policy(make_policy(task="physics"), policy_file)
        assert await wait_for(lambda: "is for task 'physics'" in caplog.text)
        await asyncio.sleep(0.3)  # several more polls of the same file
        response = await client.post("/v1/chat/completions", json=chat_body(), headers=TASK)
    assert caplog.text.count("new policy rejected") == 1
    assert response.headers["x-iapo-policy"] == label


async def test_request_log_writes_every_row_of_a_batch_in_order(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    log = await RequestLog.open(RequestLogConfig(path=str(path), flush_interval_s=0.01))
    for i in range(75):
        log.record(RequestRecord(ts=float(i), task="t", samples_launched=i, cost=i / 8))
    await log.close()
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT ts, task, samples_launched, cost FROM request_log").fetchall()
    assert sorted(rows) == [(float(i), "t", i, i / 8) for i in range(75)]
    assert log.written == 75


async def test_a_request_log_made_before_the_stopped_column_gains_it(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    # The database as the iapo before ``stopped`` made it: schema version 1, one row.
    old = await open_database(path, "request_log", REQUEST_LOG_MIGRATIONS[:1])
    await old.execute(
        "INSERT INTO request_log (ts, task, samples_launched, samples_used, samples_failed,"
        " samples_cancelled, prompt_tokens, completion_tokens, cost, early_stopped, latency_s,"
        " status) VALUES (1.0, 'old', 4, 4, 0, 0, 1, 4, 0.5, 0, 0.1, 200)"
    )
    await old.commit()
    await old.close()
    with sqlite3.connect(path) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(request_log)")]
    assert "stopped" not in columns

    log = await RequestLog.open(RequestLogConfig(path=str(path), flush_interval_s=0.01))
    log.record(RequestRecord(ts=2.0, task="new", samples_launched=3, stopped="exact"))
    await log.close()
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT task, samples_launched, stopped FROM request_log ORDER BY ts")
        assert rows.fetchall() == [("old", 4, None), ("new", 3, "exact")]
        versions = db.execute(
            "SELECT version FROM iapo_migrations WHERE component = 'request_log' ORDER BY version"
        ).fetchall()
    assert versions == [(1,), (2,)]
    # Opening it again changes nothing (the migration is applied once).
    again = await RequestLog.open(RequestLogConfig(path=str(path)))
    await again.close()


async def test_a_task_reward_override_is_where_best_of_n_is_scored(tmp_path: Path) -> None:
    from proxy.tasks import ServedTask

    asked: list[str] = []

    def scorer(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return httpx.Response(200, json={"objectives": ["a", "b"], "scores": [[0, 0], [1, 1]]})

    policy = make_policy(
        ns={"standard": 2},
        strategy="best_of_n",
        reward=RewardSpec(url="http://optimized-against.test/v1/reward", objectives=("a", "b")),
    )
    override = {"url": "http://deployed.test/v1/reward", "objectives": ["b", "a"]}
    config = make_config(tmp_path, policy, task={"reward": override})
    upstream = ScriptedUpstream(["first", "second"])
    transports = {"reward": httpx.MockTransport(scorer)}
    async with running_proxy(config, upstream, transports=transports) as (client, _):
        response = await client.post("/v1/chat/completions", json=chat_body(), headers=TASK)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "second"
    assert asked == ["http://deployed.test/v1/reward"]

    wrong = make_config(tmp_path, policy, task={"reward": {**override, "objectives": ["a"]}})
    with pytest.raises(ConfigError, match=r"reward override scores \['a'\] but the policy"):
        ServedTask(wrong.tasks[0], policy, wrong.upstreams[0], revision=None, stamp=None)
