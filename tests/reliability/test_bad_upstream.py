"""Reproductions of what an adversarial upstream and client broke (issue 15), each through
the real proxy in front of the fault upstream on a loopback socket.

Every value from an upstream is validated where it enters: out-of-range usage, a
``retry-after`` of infinity, a redirect, the upstream refusing our key and stray bytes after
a response are a clean answer or a 502 that names the upstream; never a 500, a lost
request-log row or a poisoned keep-alive connection.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from tests.reliability.conftest import (
    AUTH,
    TASK,
    assert_openai_error,
    chat,
    fault_upstream,
    make_config,
    metric,
    proxy_client,
)

# Each test runs over both upstream transports (lean, the default, and httpx).
BOTH_TRANSPORTS = True
ECONOMY = {**TASK, "x-iapo-tier": "economy"}
STANDARD = {**TASK, "x-iapo-tier": "standard"}


def log_rows(tmp_path: Path) -> list[tuple[int, int, int, str | None]]:
    """(status, prompt_tokens, completion_tokens, task) of every request-log row."""
    with sqlite3.connect(tmp_path / "requests.sqlite") as db:
        query = "SELECT status, prompt_tokens, completion_tokens, task FROM request_log"
        return list(db.execute(query))


def faulty(kind: str) -> dict[str, object]:
    """A chat body whose every upstream call gets fault ``kind``."""
    return chat(f"What is 6 times 7? [[fault:{kind}]]")


async def test_a_huge_deadline_header_is_the_server_deadline(tmp_path: Path) -> None:
    async with fault_upstream() as upstream:
        config = make_config(tmp_path, upstream.base_url)
        async with proxy_client(config) as (client, _):
            huge = await client.post(
                "/v1/chat/completions",
                json=chat(),
                headers={**ECONOMY, "x-iapo-deadline-ms": "9" * 400},
            )
            signed = await client.post(
                "/v1/chat/completions", json=chat(), headers={**ECONOMY, "x-iapo-deadline-ms": "+5"}
            )
            zeros = await client.post(
                "/v1/chat/completions",
                json=chat(),
                headers={**ECONOMY, "x-iapo-deadline-ms": "000"},
            )
    assert huge.status_code == 200, huge.text
    assert assert_openai_error(signed, 400)["param"] == "X-IAPO-Deadline-Ms"
    assert assert_openai_error(zeros, 400)["code"] == "invalid_header"


async def test_retry_after_inf_is_a_429_in_the_openai_shape(tmp_path: Path) -> None:
    async with fault_upstream() as upstream:
        config = make_config(tmp_path, upstream.base_url, upstream={"max_retries": 1})
        async with proxy_client(config) as (client, _):
            task = await client.post(
                "/v1/chat/completions", json=faulty("retry_inf"), headers=ECONOMY
            )
            passthrough = await client.post(
                "/v1/chat/completions", json=faulty("retry_inf"), headers=AUTH
            )
    assert_openai_error(task, 429)
    assert "retry-after" not in task.headers  # nothing usable to say
    assert_openai_error(passthrough, 429, retry_header=False)
    assert "retry-after" not in passthrough.headers
    assert upstream.stats.faults["retry_inf"] == 4  # each: one call, one retry


@pytest.mark.parametrize("kind", ["usage_negative", "usage_huge"])
async def test_out_of_range_usage_is_a_502_and_every_request_is_logged(
    tmp_path: Path, kind: str
) -> None:
    async with fault_upstream() as upstream:
        config = make_config(tmp_path, upstream.base_url)
        async with proxy_client(config) as (client, service):
            task = await client.post("/v1/chat/completions", json=faulty(kind), headers=ECONOMY)
            async with client.stream(
                "POST",
                "/v1/chat/completions",
                json=faulty(kind) | {"stream": True},
                headers=ECONOMY,
            ) as stream:
                events = (await stream.aread()).decode()
            passthrough = await client.post("/v1/chat/completions", json=faulty(kind), headers=AUTH)
            good = await client.post("/v1/chat/completions", json=chat(), headers=ECONOMY)
            text = service.metrics.render().decode()
    error = assert_openai_error(task, 502)
    assert error["code"] == "bad_response"
    assert "usage" in error["message"]
    # a task stream that fails ends with an error event, never cut mid-chunk or [DONE]
    assert '"code":"bad_response"' in events
    assert "[DONE]" not in events
    # pass-through stays byte-faithful; the usage it cannot trust is not counted
    assert passthrough.status_code == 200
    assert good.status_code == 200
    rows = log_rows(tmp_path)
    assert sorted(r[0] for r in rows) == [200, 200, 502, 502]
    assert all(0 <= r[1] < 2**40 and r[2] >= 0 for r in rows)
    assert (metric(text, "iapo_prompt_tokens_total", task="passthrough") or 0) == 0
    assert (metric(text, "iapo_prompt_tokens_total", task="math") or 0) >= 0


@pytest.mark.parametrize(
    ("kind", "code"), [("302", "bad_response"), ("401", "upstream_auth"), ("403", "upstream_auth")]
)
async def test_a_redirect_or_refused_key_upstream_is_a_502_naming_it(
    tmp_path: Path, kind: str, code: str
) -> None:
    async with fault_upstream() as upstream:
        config = make_config(tmp_path, upstream.base_url)
        async with proxy_client(config) as (client, _):
            task = await client.post("/v1/chat/completions", json=faulty(kind), headers=ECONOMY)
            passthrough = await client.post("/v1/chat/completions", json=faulty(kind), headers=AUTH)
    for response in (task, passthrough):
        error = assert_openai_error(response, 502)
        assert error["code"] == code
        assert "'up'" in error["message"]


async def test_stray_bytes_after_a_response_do_not_poison_the_pool(
    tmp_path: Path, upstream_transport: str
) -> None:
    async with fault_upstream() as upstream:
        config = make_config(tmp_path, upstream.base_url)
        async with proxy_client(config) as (client, _):
            async with asyncio.timeout(5):  # the innocent request must not wait its deadline
                first = await client.post(
                    "/v1/chat/completions", json=faulty("extra_bytes"), headers=ECONOMY
                )
                after = [
                    await client.post("/v1/chat/completions", json=chat(), headers=ECONOMY)
                    for _ in range(3)
                ]
    assert first.status_code == 200, first.text
    if upstream_transport == "httpx":
        # httpcore reads the stray head as the next call's response: that one request is
        # a clean 502 (its body is not a completion), the connection is then dropped.
        assert after[0].status_code in (200, 502)
        if after[0].status_code == 502:
            assert assert_openai_error(after[0])["code"] == "bad_response"
        assert [r.status_code for r in after[1:]] == [200, 200]
        return
    assert [r.status_code for r in after] == [200, 200, 200]
    assert upstream.stats.connections == 2  # the tainted connection was dropped, once
    assert upstream.stats.chat_requests == 4  # and nothing had to be retried


async def test_a_reset_after_the_request_was_read_is_resent_within_the_budget(
    tmp_path: Path,
) -> None:
    async with fault_upstream() as upstream:
        config = make_config(
            tmp_path,
            upstream.base_url,
            upstream={"max_retries": 5},
            extra={"retry": {"max_resends": 2}},
        )
        async with proxy_client(config) as (client, service):
            # warm the pool, so the resets hit kept-alive connections too
            assert (
                await client.post("/v1/chat/completions", json=chat(), headers=ECONOMY)
            ).status_code == 200
            before = upstream.stats.chat_requests
            response = await client.post(
                "/v1/chat/completions", json=faulty("reset"), headers=STANDARD
            )
            text = service.metrics.render().decode()
    assert_openai_error(response, 502)
    # one N=4 call (the upstream honours n), then at most two re-sends for the request
    assert upstream.stats.chat_requests - before == 3
    assert metric(text, "iapo_upstream_resends_total", upstream="up") == 2
