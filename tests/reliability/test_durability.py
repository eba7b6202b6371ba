"""Durability: SIGTERM drains and flushes, bad policy files are rejected while the previous
policy keeps serving, hot reload drops no request, SQLite runs in WAL mode."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest

from iapo.testing import free_port
from policies import encode_policy, save_policy
from tests.reliability.conftest import (
    AUTH,
    PROXY_KEY,
    TASK,
    assert_openai_error,
    chat,
    eventually,
    fault_upstream,
    make_config,
    make_policy,
    proxy_client,
)

ECONOMY = {**TASK, "x-iapo-tier": "economy"}
PREMIUM = {**TASK, "x-iapo-tier": "premium"}


def write_toml(tmp_path: Path, upstream_url: str, port: int, drain_s: float = 20) -> Path:
    save_policy(make_policy(), tmp_path / "math.policy.json")
    config = tmp_path / "proxy.toml"
    config.write_text(
        f"""
[server]
host = "127.0.0.1"
port = {port}
drain_timeout_s = {drain_s}

[auth]
keys_env = "IAPO_TEST_KEYS"

[[upstreams]]
name = "up"
base_url = "{upstream_url}"
model = "fault-model"
supports_n = false
price_per_1k_completion_tokens = 2.0

[request_log]
path = "requests.sqlite"
flush_interval_s = 2.0

[[tasks]]
name = "math"
policy_file = "math.policy.json"
""",
        encoding="utf-8",
    )
    return config


async def start_serve(config: Path, log: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "IAPO_TEST_KEYS": PROXY_KEY}
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "iapo", "serve", "--config", str(config)),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def wait_ready(
    client: httpx.AsyncClient, proc: asyncio.subprocess.Process, log: Path
) -> None:
    for _ in range(300):
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert proc.returncode is None, f"iapo serve exited early; see {log}"
        await asyncio.sleep(0.05)
    raise AssertionError("iapo serve did not become ready")


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, upstream_url: str, *, drain_s: float = 20
) -> AsyncIterator[tuple[httpx.AsyncClient, asyncio.subprocess.Process, Path]]:
    """A real ``iapo serve`` process in front of ``upstream_url``, ready: (client, process,
    its log). Killed on the way out if the test has not stopped it."""
    port = free_port()
    config = write_toml(tmp_path, upstream_url, port, drain_s=drain_s)
    log = tmp_path / "serve.log"
    proc = await start_serve(config, log)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            await wait_ready(client, proc, log)
            yield client, proc, log
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.e2e
async def test_sigterm_drains_in_flight_requests_and_flushes_the_log(tmp_path: Path) -> None:
    # Slow samples: the requests are still in flight when SIGTERM arrives; the long
    # flush interval means their log rows are only queued, not yet written.
    async with (
        fault_upstream(latency_ms=1500) as upstream,
        serving(tmp_path, upstream.base_url) as (client, proc, log),
    ):

        async def stream(headers: dict[str, str]) -> list[str]:
            body = chat(stream=True)
            async with client.stream(
                "POST", "/v1/chat/completions", json=body, headers=headers
            ) as r:
                return [line async for line in r.aiter_lines() if line]

        requests = [
            asyncio.create_task(client.post("/v1/chat/completions", json=chat(), headers=headers))
            for headers in [ECONOMY] * 3 + [PREMIUM] * 2 + [AUTH]
        ]
        streams = [asyncio.create_task(stream(h)) for h in (ECONOMY, AUTH)]
        # 3 economy + 2 x 8 premium + 1 pass-through + 2 streams, all upstream now
        assert await eventually(lambda: upstream.stats.in_flight == 3 + 16 + 1 + 2, seconds=10.0)
        proc.send_signal(signal.SIGTERM)
        responses = await asyncio.gather(*requests)
        streamed = await asyncio.gather(*streams)
        code = await asyncio.wait_for(proc.wait(), 30)
    assert [r.status_code for r in responses] == [200] * 6
    assert [r.headers.get("x-iapo-samples") for r in responses] == ["1/1"] * 3 + ["8/8"] * 2 + [
        None
    ]
    for lines in streamed:  # both streams finished whole, not cut by the shutdown
        assert lines[-1] == "data: [DONE]", lines
    # uvicorn shuts down gracefully, then re-raises the signal: dying "by SIGTERM" after
    # a clean drain is the normal end of a server process.
    assert code in (0, -signal.SIGTERM), log.read_text()
    with sqlite3.connect(tmp_path / "requests.sqlite") as db:
        rows = db.execute(
            "SELECT tier, status, samples_used FROM request_log WHERE task = 'math'"
        ).fetchall()
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    assert sorted(rows) == [("economy", 200, 1)] * 4 + [("premium", 200, 8)] * 2
    assert mode == "wal"


async def _label(client: httpx.AsyncClient) -> tuple[int, str, str]:
    r = await client.post("/v1/chat/completions", json=chat(), headers=ECONOMY)
    return r.status_code, r.headers.get("x-iapo-policy", ""), r.headers.get("x-iapo-samples", "")


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda good: good[: len(good) // 2],  # half-written
        lambda good: b"\x00\xff garbage",
        lambda good: good.replace(b'"n": 2', b'"n": -3'),  # invalid field
        lambda good: good.replace(b'"task": "math"', b'"task": "other"'),  # wrong task
        lambda good: b"",
    ],
    ids=["half-written", "garbage", "invalid-n", "wrong-task", "empty"],
)
async def test_bad_policy_file_is_rejected_and_the_previous_keeps_serving(
    tmp_path: Path, corrupt: Callable[[bytes], bytes], caplog: pytest.LogCaptureFixture
) -> None:
    def rejected() -> bool:
        return any("new policy rejected" in r.getMessage() for r in caplog.records)

    async with fault_upstream() as upstream:
        config = make_config(tmp_path, upstream.base_url)
        policy_file = tmp_path / "math.policy.json"
        async with proxy_client(config) as (client, _):
            status, before, samples = await _label(client)
            assert (status, samples) == (200, "1/1")
            good = encode_policy(make_policy({"economy": 2, "standard": 4, "premium": 8}))
            caplog.set_level(logging.ERROR, logger="proxy.tasks")
            assert not rejected()
            policy_file.write_bytes(corrupt(good))  # not atomic, on purpose
            # the reloader read this file and refused it (not merely "not read yet")
            assert await eventually(rejected), "the bad policy file was never read"
            after_bad = await _label(client)
            save_policy(make_policy({"economy": 2, "standard": 4, "premium": 8}), policy_file)
            for _ in range(100):
                status, label, samples = await _label(client)
                if label != before:
                    break
                await asyncio.sleep(0.02)
    assert after_bad == (200, before, "1/1")
    assert label != before
    assert (status, samples) == (200, "2/2")


async def test_hot_reload_under_load_drops_no_request(tmp_path: Path) -> None:
    async with fault_upstream(latency_ms=5) as upstream:
        config = make_config(tmp_path, upstream.base_url)
        policy_file = tmp_path / "math.policy.json"
        async with proxy_client(config) as (client, _):
            stop = asyncio.Event()

            async def traffic() -> list[tuple[int, str]]:
                seen = []
                while not stop.is_set():
                    r = await client.post("/v1/chat/completions", json=chat(), headers=ECONOMY)
                    seen.append((r.status_code, r.headers.get("x-iapo-samples", "")))
                return seen

            workers = [asyncio.create_task(traffic()) for _ in range(4)]
            for i in range(8):
                n = 1 + i % 3
                save_policy(make_policy({"economy": n, "standard": 4, "premium": 8}), policy_file)
                await asyncio.sleep(0.12)
            stop.set()
            results = [item for worker in await asyncio.gather(*workers) for item in worker]
    assert len(results) > 20
    assert {status for status, _ in results} == {200}
    assert {samples for _, samples in results} >= {"1/1", "2/2", "3/3"}


async def test_request_log_and_store_use_wal_and_a_busy_timeout(tmp_path: Path) -> None:
    async with fault_upstream() as upstream:
        config = make_config(tmp_path, upstream.base_url)
        async with proxy_client(config) as (client, service):
            assert (await _label(client))[0] == 200
            assert service.request_log is not None
            db = service.request_log._db
            async with db.execute("PRAGMA journal_mode") as cursor:
                mode = (await cursor.fetchone())[0]
            async with db.execute("PRAGMA busy_timeout") as cursor:
                busy = (await cursor.fetchone())[0]
    assert mode == "wal"
    assert busy >= 1000


def cache_rows(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            return int(db.execute("SELECT COUNT(*) FROM optimizer_samples").fetchone()[0])
    except sqlite3.OperationalError:  # the table is not created yet
        return 0


def write_task(tmp_path: Path, upstream_url: str) -> Path:
    rows = "".join(
        f'{{"id": "q{i}", "question": "What is {i} + 1?", "answer": "42"}}\n' for i in range(20)
    )
    (tmp_path / "data.jsonl").write_text(rows, encoding="utf-8")
    task = tmp_path / "task.toml"
    task.write_text(
        f"""
[task]
name = "math"
strategy = "majority"
extractor = {{ kind = "boxed" }}
n_max = 4

[[task.prompts]]
id = "short"
text = "Answer in \\\\boxed{{}}."

[[task.prompts]]
id = "long"
text = "Think step by step, then answer in \\\\boxed{{}}."

[upstream]
base_url = "{upstream_url}"
model = "fault-model"
max_concurrency = 8

[dataset]
path = "data.jsonl"
""",
        encoding="utf-8",
    )
    return task


@pytest.mark.e2e
async def test_sigterm_of_a_live_optimize_loses_no_stored_sample_and_resumes(
    tmp_path: Path,
) -> None:
    budget = 240
    cache = tmp_path / "samples.sqlite"
    async with fault_upstream(
        latency_ms=100, answers=("42", "41"), answer_weights=(3, 1)
    ) as upstream:
        task = write_task(tmp_path, upstream.base_url)
        command = (
            *(sys.executable, "-m", "iapo", "optimize", "--task", str(task)),
            *("--budget", str(budget), "--seed", "1", "--quiet"),
            *("--cache", str(cache), "--out", str(tmp_path / "policy.json")),
        )
        with (tmp_path / "first.log").open("wb") as out:
            first = await asyncio.create_subprocess_exec(*command, stdout=out, stderr=out)
        try:
            stored_before = 0
            for _ in range(500):
                stored_before = await asyncio.to_thread(cache_rows, cache)
                if stored_before >= 40 and upstream.stats.in_flight > 0:
                    break
                assert first.returncode is None, (tmp_path / "first.log").read_text()
                await asyncio.sleep(0.02)
            first.send_signal(signal.SIGTERM)
            await asyncio.wait_for(first.wait(), 30)
        finally:
            if first.returncode is None:
                first.kill()
                await first.wait()
        served_first = upstream.stats.choices_served
        stored_after_kill = await asyncio.to_thread(cache_rows, cache)
        with sqlite3.connect(cache) as db:
            integrity = db.execute("PRAGMA integrity_check").fetchone()[0]

        with (tmp_path / "second.log").open("wb") as out:
            second = await asyncio.create_subprocess_exec(*command, stdout=out, stderr=out)
            code = await asyncio.wait_for(second.wait(), 120)
        served_second = upstream.stats.choices_served - served_first
    assert 40 <= stored_before <= stored_after_kill < budget
    assert integrity == "ok"
    # a clean stop, not a kill: the exit code says SIGTERM and the log says how to resume
    assert first.returncode == 128 + signal.SIGTERM, (tmp_path / "first.log").read_text()
    assert "run the same command again" in (tmp_path / "first.log").read_text()
    assert code == 0, (tmp_path / "second.log").read_text()
    stored_final = cache_rows(cache)
    # the resumed run paid only for samples the cache did not have: nothing twice
    assert served_second == stored_final - stored_after_kill
    # and what the first run was served but had not stored when killed is bounded by
    # what was in flight then (its concurrency), not by the run so far
    assert served_first - stored_after_kill <= 8 * 4


async def test_every_answered_request_has_one_log_row(tmp_path: Path) -> None:
    async with fault_upstream(script=("ok", "500", "ok", "ok", "502")) as upstream:
        config = make_config(tmp_path, upstream.base_url, upstream={"max_retries": 0})
        async with proxy_client(config) as (client, _):
            statuses = [
                (await client.post("/v1/chat/completions", json=chat(), headers=AUTH)).status_code,
                (await client.post("/v1/chat/completions", json=chat(), headers=AUTH)).status_code,
            ]
            async with client.stream(
                "POST", "/v1/chat/completions", json=chat(stream=True), headers=AUTH
            ) as r:
                statuses.append(r.status_code)
                await r.aread()
            for _ in range(2):
                r = await client.post("/v1/chat/completions", json=chat(), headers=ECONOMY)
                statuses.append(r.status_code)
    assert statuses == [200, 500, 200, 200, 502]
    with sqlite3.connect(tmp_path / "requests.sqlite") as db:
        rows = db.execute("SELECT task, status FROM request_log ORDER BY id").fetchall()
    assert rows == [
        ("passthrough", 200),
        ("passthrough", 500),
        ("passthrough", 200),
        ("math", 200),
        ("math", 502),
    ]


class StuckShutdown(NamedTuple):
    code: int | None
    outcome: httpx.Response | BaseException
    disconnected: int
    rows: list[tuple[str, int]]


async def sigterm_with_a_stuck_call(tmp_path: Path) -> StuckShutdown:
    """SIGTERM ``iapo serve`` (drain bound 1 s) while one upstream call hangs."""
    async with fault_upstream(script=("hang",), hang_s=60) as upstream:
        async with serving(tmp_path, upstream.base_url, drain_s=1) as (client, proc, _):
            stuck = asyncio.create_task(
                client.post("/v1/chat/completions", json=chat(), headers=ECONOMY)
            )
            assert await eventually(lambda: upstream.stats.in_flight == 1, seconds=10.0)
            proc.send_signal(signal.SIGTERM)
            # the drain bound (1 s) ends the wait, not the upstream's 120 s timeout
            code = await asyncio.wait_for(proc.wait(), 15)
            outcome = (await asyncio.gather(stuck, return_exceptions=True))[0]
        assert await eventually(lambda: upstream.stats.in_flight == 0, seconds=10.0)
    with sqlite3.connect(tmp_path / "requests.sqlite") as db:
        rows = db.execute("SELECT task, status FROM request_log").fetchall()
    return StuckShutdown(code, outcome, upstream.stats.disconnected, rows)


@pytest.mark.e2e
async def test_sigterm_with_a_stuck_upstream_call_is_bounded_and_still_logged(
    tmp_path: Path,
) -> None:
    result = await sigterm_with_a_stuck_call(tmp_path)
    assert result.code in (0, -signal.SIGTERM)
    assert result.disconnected == 1  # the stuck upstream call was closed
    if isinstance(result.outcome, httpx.Response):  # an answer, if any, is an error
        assert result.outcome.status_code >= 500
    assert len(result.rows) == 1, result.rows  # the abandoned request is accounted for
    assert result.rows[0][1] >= 499


@pytest.mark.e2e
async def test_a_request_cut_off_by_shutdown_gets_an_honest_503(tmp_path: Path) -> None:
    result = await sigterm_with_a_stuck_call(tmp_path)
    assert isinstance(result.outcome, httpx.Response), result.outcome
    assert_openai_error(result.outcome, 503)
    assert result.rows == [("math", 503)]


@pytest.mark.e2e
async def test_a_sub_second_drain_bound_still_drains(tmp_path: Path) -> None:
    async with (
        fault_upstream(latency_ms=300) as upstream,
        serving(tmp_path, upstream.base_url, drain_s=0.9) as (client, proc, _),
    ):
        request = asyncio.create_task(
            client.post("/v1/chat/completions", json=chat(), headers=ECONOMY)
        )
        assert await eventually(lambda: upstream.stats.in_flight == 1, seconds=10.0)
        proc.send_signal(signal.SIGTERM)
        response = await request
        await asyncio.wait_for(proc.wait(), 15)
    assert response.status_code == 200
