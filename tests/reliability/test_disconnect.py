"""A client that hangs up cancels everything it caused: upstream calls are closed, no task
is left running in the proxy's loop, and the request log bills what arrived exactly once.

The proxy runs under a real uvicorn server in the test's own event loop, so the client
closes a real connection and ``asyncio.all_tasks()`` sees every task the proxy made.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.reliability.conftest import (
    AUTH,
    SAMPLE_TOKENS,
    TASK,
    chat,
    eventually,
    fault_upstream,
    make_config,
    uvicorn_proxy,
)

PREMIUM = {**TASK, "x-iapo-tier": "premium"}


def log_rows(tmp_path: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(tmp_path / "requests.sqlite") as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM request_log ORDER BY id")]


async def hang_up(
    url: str, headers: dict[str, str], body: dict[str, Any], started: Callable[[], bool]
) -> None:
    """Send a request, wait until ``started()``, then drop the connection."""

    async def send() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            if body.get("stream"):
                async with client.stream(
                    "POST", "/v1/chat/completions", json=body, headers=headers
                ) as r:
                    async for _ in r.aiter_raw():
                        pass
            else:
                await client.post("/v1/chat/completions", json=body, headers=headers)

    request = asyncio.create_task(send())
    assert await eventually(started), "the upstream calls never started"
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request


async def no_new_tasks(before: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    """Tasks created since ``before`` that are still alive after a bounded wait."""
    me = asyncio.current_task()

    def ours(task: asyncio.Task[Any]) -> bool:
        # the fault upstream's own tasks (an idle keep-alive connection) are not the proxy's
        code = getattr(task.get_coro(), "cr_code", None)
        return code is not None and "/iapo/testing/" in code.co_filename

    def leftover() -> set[asyncio.Task[Any]]:
        return {
            t
            for t in asyncio.all_tasks()
            if t not in before and t is not me and not t.done() and not ours(t)
        }

    await eventually(lambda: not leftover())
    return leftover()


@pytest.mark.parametrize("stream", [False, True])
async def test_disconnect_cancels_every_upstream_call(tmp_path: Path, stream: bool) -> None:
    async with fault_upstream(script=("hang",) * 8, hang_s=30) as upstream:
        config = make_config(tmp_path, upstream.base_url, upstream={"supports_n": False})
        async with uvicorn_proxy(config) as (url, service):
            before = set(asyncio.all_tasks())
            await hang_up(url, PREMIUM, chat(stream=stream), lambda: upstream.stats.in_flight == 8)
            assert await eventually(lambda: upstream.stats.in_flight == 0)
            leftover = await no_new_tasks(before)
            assert await eventually(lambda: service.in_flight == 0)
        rows = log_rows(tmp_path)
    assert upstream.stats.disconnected == 8  # the proxy closed every upstream connection
    assert not leftover, [t.get_name() for t in leftover]
    assert len(rows) == 1
    row = rows[0]
    assert row["status"] == 499
    assert row["samples_launched"] == 8
    assert row["samples_cancelled"] == 8
    assert row["completion_tokens"] == 0
    assert row["cost"] == 0


async def test_cancelled_samples_are_not_billed_twice(tmp_path: Path) -> None:
    # Four samples arrive, four hang; the client leaves while they hang.
    async with fault_upstream(script=("ok",) * 4 + ("hang",) * 4, hang_s=30) as upstream:
        config = make_config(tmp_path, upstream.base_url, upstream={"supports_n": False})
        async with uvicorn_proxy(config) as (url, _):

            def half_served() -> bool:
                return upstream.stats.completed == 4 and upstream.stats.in_flight == 4

            await hang_up(url, PREMIUM, chat(), half_served)
            assert await eventually(lambda: upstream.stats.in_flight == 0)
        rows = log_rows(tmp_path)
    assert len(rows) == 1
    row = rows[0]
    assert row["samples_launched"] == 8
    assert row["samples_used"] == 4
    assert row["samples_cancelled"] == 4
    assert row["samples_used"] + row["samples_failed"] + row["samples_cancelled"] == 8
    # billed: exactly what the upstream served, once
    assert row["completion_tokens"] == upstream.stats.choices_served * SAMPLE_TOKENS == 40
    assert row["cost"] > 0


async def test_passthrough_disconnect_closes_the_upstream_call(tmp_path: Path) -> None:
    async with fault_upstream(script=("hang",), hang_s=30) as upstream:
        config = make_config(tmp_path, upstream.base_url)
        async with uvicorn_proxy(config) as (url, service):
            before = set(asyncio.all_tasks())
            await hang_up(url, AUTH, chat(), lambda: upstream.stats.in_flight == 1)
            assert await eventually(lambda: upstream.stats.in_flight == 0)
            leftover = await no_new_tasks(before)
            assert await eventually(lambda: service.in_flight == 0)
    assert upstream.stats.disconnected == 1
    assert not leftover, [t.get_name() for t in leftover]


async def test_stalled_passthrough_stream_disconnect(tmp_path: Path) -> None:
    async with fault_upstream(script=("stall",), hang_s=30) as upstream:
        config = make_config(tmp_path, upstream.base_url)
        async with uvicorn_proxy(config) as (url, service):
            before = set(asyncio.all_tasks())
            await hang_up(url, AUTH, chat(stream=True), lambda: upstream.stats.in_flight == 1)
            assert await eventually(lambda: upstream.stats.in_flight == 0)
            leftover = await no_new_tasks(before)
            assert await eventually(lambda: service.in_flight == 0)
    assert upstream.stats.disconnected == 1
    assert not leftover, [t.get_name() for t in leftover]


async def test_disconnect_during_a_retry_backoff_stops_the_retries(tmp_path: Path) -> None:
    # 429 with retry-after 1 s: the proxy waits before retrying; the client leaves first.
    async with fault_upstream(error_rates={429: 1.0}, retry_after_s=1) as upstream:
        config = make_config(tmp_path, upstream.base_url, upstream={"max_retries": 3})
        async with uvicorn_proxy(config) as (url, service):
            before = set(asyncio.all_tasks())
            await hang_up(
                url,
                {**TASK, "x-iapo-tier": "economy"},
                chat(),
                lambda: upstream.stats.completed == 1,
            )
            leftover = await no_new_tasks(before)
            assert await eventually(lambda: service.in_flight == 0)
            await asyncio.sleep(1.5)  # past the retry-after: a leftover retry would show now
    assert not leftover, [t.get_name() for t in leftover]
    assert upstream.stats.chat_requests == 1


async def test_random_disconnects_leave_nothing_behind_and_log_every_request(
    tmp_path: Path, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    plan = {"latency_ms": 40, "jitter_ms": 80, "chunk_delay_ms": 5, **FAULTS}
    async with fault_upstream(**plan, hang_s=30) as upstream:
        config = make_config(tmp_path, upstream.base_url, upstream={"timeout_s": 1})
        async with uvicorn_proxy(config) as (url, service):
            before = set(asyncio.all_tasks())
            sent = 0
            entered = count_entries(service)
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                for _ in range(12):
                    batch = []
                    for _ in range(4):
                        headers = dict(AUTH)
                        if rng.random() < 0.6:
                            tier = ("economy", "standard", "premium")[int(rng.integers(3))]
                            headers |= {"x-iapo-task": "math", "x-iapo-tier": tier}
                        body = chat(stream=bool(rng.random() < 0.5))
                        batch.append(asyncio.create_task(send(client, headers, body)))
                    sent += len(batch)
                    await asyncio.sleep(float(rng.uniform(0, 0.15)))
                    for task in batch:
                        if rng.random() < 0.5:
                            task.cancel()  # the client hangs up, whatever stage it is at
                    await asyncio.gather(*batch, return_exceptions=True)
            assert await eventually(lambda: service.in_flight == 0), f"seed={seed}"
            assert await eventually(lambda: upstream.stats.in_flight == 0), f"seed={seed}"
            leftover = await no_new_tasks(before)
        rows = log_rows(tmp_path)
    assert not leftover, (seed, [t.get_name() for t in leftover])
    # every request the proxy took on is logged exactly once (a client that hung up before
    # its request was read was never the proxy's)
    assert len(rows) == entered[0] <= sent, f"seed={seed}: {len(rows)} rows, {entered[0]} taken on"
    for row in rows:
        # every sample launched is accounted for exactly once: used, failed or cancelled
        accounted = row["samples_used"] + row["samples_failed"] + row["samples_cancelled"]
        assert accounted == row["samples_launched"], f"seed={seed}: {row}"
        if row["status"] == 200:
            assert row["samples_used"] >= 1, f"seed={seed}: {row}"
        if row["task"] == "math":
            assert row["samples_used"] <= row["samples_launched"], (seed, row)


def count_entries(service: Any) -> list[int]:
    """Count the requests the proxy takes on (``ProxyService.enter``)."""
    entered = [0]
    enter = service.enter

    def counting() -> None:
        entered[0] += 1
        enter()

    service.enter = counting
    return entered


FAULTS = {"error_rates": {503: 0.05, 500: 0.05}, "reset_prob": 0.05, "hang_prob": 0.05}


async def send(client: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any]) -> None:
    if body.get("stream"):
        async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
            async for _ in r.aiter_raw():
                pass
    else:
        await client.post("/v1/chat/completions", json=body, headers=headers)
