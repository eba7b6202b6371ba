"""Each upstream fault meets the real proxy: retried where safe, aggregated where partial,
an honest error in the OpenAI shape where nothing arrived, never a hang."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.reliability.conftest import (
    AUTH,
    SAMPLE_TOKENS,
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
PREMIUM = {**TASK, "x-iapo-tier": "premium"}


async def test_transient_503_is_retried_and_succeeds(tmp_path: Path) -> None:
    async with fault_upstream(script=("503", "reset", "ok")) as upstream:
        config = make_config(tmp_path, upstream.base_url, upstream={"max_retries": 2})
        async with proxy_client(config) as (client, _):
            response = await client.post("/v1/chat/completions", json=chat(), headers=ECONOMY)
    assert response.status_code == 200, response.text
    assert response.headers["x-iapo-samples"] == "1/1"
    assert upstream.stats.chat_requests == 3  # two failures, then the answer
    assert "\\boxed{42}" in response.json()["choices"][0]["message"]["content"]


async def test_retries_are_bounded(tmp_path: Path) -> None:
    async with fault_upstream(script=("reset",) * 10) as upstream:
        config = make_config(tmp_path, upstream.base_url, upstream={"max_retries": 2})
        async with proxy_client(config) as (client, _):
            response = await client.post("/v1/chat/completions", json=chat(), headers=ECONOMY)
    # a reset after the request was read: the upstream may have processed it (502)
    error = assert_openai_error(response, 502)
    assert (error["type"], error["code"]) == ("api_error", "upstream_disconnected")
    assert upstream.stats.chat_requests == 3  # one call and two re-sends, no more


async def test_persistent_429_is_an_honest_429_with_retry_after(tmp_path: Path) -> None:
    async with fault_upstream(error_rates={429: 1.0}, retry_after_s=0) as upstream:
        config = make_config(tmp_path, upstream.base_url, upstream={"max_retries": 1})
        async with proxy_client(config) as (client, _):
            task = await client.post("/v1/chat/completions", json=chat(), headers=ECONOMY)
            passthrough = await client.post("/v1/chat/completions", json=chat(), headers=AUTH)
    error = assert_openai_error(task, 429)
    assert error["type"] == "rate_limit_error"
    assert task.headers["retry-after"] == "0"
    assert_openai_error(passthrough, 429, retry_header=False)
    assert passthrough.headers["retry-after"] == "0"
    assert upstream.stats.chat_requests == 4  # each: one call, one retry


@pytest.mark.parametrize(("fault", "status", "code"), [("500", 502, None), ("502", 502, None)])
async def test_server_errors_become_502(tmp_path: Path, fault: str, status: int, code: str) -> None:
    async with fault_upstream(script=(fault,) * 10) as upstream:
        config = make_config(tmp_path, upstream.base_url, upstream={"max_retries": 1})
        async with proxy_client(config) as (client, _):
            response = await client.post("/v1/chat/completions", json=chat(), headers=ECONOMY)
    error = assert_openai_error(response, status)
    assert error["type"] == "api_error"


async def test_malformed_json_is_a_502_bad_response(tmp_path: Path) -> None:
    async with fault_upstream(script=("malformed",) * 10) as upstream:
        config = make_config(tmp_path, upstream.base_url)
        async with proxy_client(config) as (client, service):
            response = await client.post("/v1/chat/completions", json=chat(), headers=ECONOMY)
            text = service.metrics.render().decode()
    error = assert_openai_error(response, 502)
    assert error["code"] == "bad_response"  # not a generic upstream_error
    assert metric(text, "iapo_upstream_errors_total", upstream="up", kind="bad_response") >= 1


async def test_truncated_body_is_retried(tmp_path: Path) -> None:
    async with fault_upstream(script=("truncate", "ok")) as upstream:
        config = make_config(tmp_path, upstream.base_url)
        async with proxy_client(config) as (client, _):
            response = await client.post("/v1/chat/completions", json=chat(), headers=ECONOMY)
    assert response.status_code == 200, response.text
    assert upstream.stats.chat_requests == 2


async def test_hang_becomes_504_at_the_upstream_timeout(tmp_path: Path) -> None:
    async with fault_upstream(script=("hang",) * 5) as upstream:
        config = make_config(tmp_path, upstream.base_url, upstream={"timeout_s": 0.3})
        async with proxy_client(config) as (client, _):
            response = await client.post("/v1/chat/completions", json=chat(), headers=ECONOMY)
            async with asyncio.timeout(5):
                await upstream.wait_idle()
    error = assert_openai_error(response, 504)
    assert error["code"] is not None
    assert upstream.stats.disconnected == upstream.stats.chat_requests  # the proxy hung up


async def test_request_deadline_is_honoured(tmp_path: Path) -> None:
    async with fault_upstream(script=("hang",) * 5) as upstream:
        config = make_config(tmp_path, upstream.base_url, upstream={"timeout_s": 60})
        async with proxy_client(config) as (client, _):
            headers = {**PREMIUM, "x-iapo-deadline-ms": "300"}
            async with asyncio.timeout(10):  # no hang: the deadline, not the 60 s timeout
                response = await client.post("/v1/chat/completions", json=chat(), headers=headers)
                await upstream.wait_idle()
    assert_openai_error(response, 504)
    assert upstream.stats.disconnected == upstream.stats.chat_requests >= 1


async def test_partial_failure_aggregates_the_rest(tmp_path: Path) -> None:
    # Without n support the proxy makes 8 calls; the first 3 fail and are not retried.
    async with fault_upstream(script=("500", "500", "malformed")) as upstream:
        config = make_config(
            tmp_path, upstream.base_url, upstream={"supports_n": False, "max_retries": 0}
        )
        async with proxy_client(config) as (client, _):
            response = await client.post("/v1/chat/completions", json=chat(), headers=PREMIUM)
    assert response.status_code == 200, response.text
    assert response.headers["x-iapo-samples"] == "5/8"
    assert response.headers["x-iapo-agreement"] == "1.0000"
    usage = response.json()["usage"]
    assert usage["completion_tokens"] == 5 * SAMPLE_TOKENS  # only what arrived is billed
    assert upstream.stats.choices_served == 5


async def test_all_samples_failing_is_an_honest_error(tmp_path: Path) -> None:
    async with fault_upstream(error_rates={503: 1.0}) as upstream:
        config = make_config(
            tmp_path, upstream.base_url, upstream={"supports_n": False, "max_retries": 0}
        )
        async with proxy_client(config) as (client, _):
            response = await client.post("/v1/chat/completions", json=chat(), headers=PREMIUM)
    error = assert_openai_error(response, 503)
    assert "8" in error["message"]
    assert upstream.stats.chat_requests == 8


@pytest.mark.parametrize("plan", [{"ignore_n": True}, {"fewer_choices": True}])
async def test_upstream_short_on_choices_is_topped_up(
    tmp_path: Path, plan: dict[str, bool]
) -> None:
    async with fault_upstream(**plan) as upstream:
        config = make_config(tmp_path, upstream.base_url)
        async with proxy_client(config) as (client, _):
            response = await client.post("/v1/chat/completions", json=chat(), headers=PREMIUM)
    assert response.status_code == 200, response.text
    # The policy says N=8: an upstream answering fewer choices than asked must not
    # silently turn N=8 into N=1; the proxy asks again for the missing samples.
    assert response.headers["x-iapo-samples"] == "8/8"
    assert response.json()["usage"]["completion_tokens"] == 8 * SAMPLE_TOKENS
    assert upstream.stats.choices_served == 8


async def stream_lines(
    client: object, headers: dict[str, str], body: dict[str, object]
) -> tuple[int, list[str]]:
    async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:  # type: ignore[attr-defined]
        return r.status_code, [line async for line in r.aiter_lines() if line]


@pytest.mark.parametrize("fault", ["truncate", "stall", "malformed"])
async def test_broken_passthrough_stream_ends_with_an_error_event(
    tmp_path: Path, fault: str
) -> None:
    async with fault_upstream(script=(fault,)) as upstream:
        config = make_config(tmp_path, upstream.base_url, upstream={"timeout_s": 0.5})
        async with proxy_client(config) as (client, _):
            async with asyncio.timeout(10):
                status, lines = await stream_lines(client, AUTH, chat(stream=True))
    assert status == 200
    assert "data: [DONE]" not in lines or fault == "malformed"
    if fault != "malformed":
        last = json.loads(lines[-1].removeprefix("data: "))
        assert set(last["error"]) == {"message", "type", "param", "code"}
    # bytes of the stream reached the client: retrying would duplicate them, so no retry
    assert upstream.stats.chat_requests == 1


async def test_failed_task_stream_ends_with_an_error_event(tmp_path: Path) -> None:
    async with fault_upstream(error_rates={502: 1.0}) as upstream:
        config = make_config(tmp_path, upstream.base_url, upstream={"max_retries": 0})
        async with proxy_client(config) as (client, _):
            status, lines = await stream_lines(client, PREMIUM, chat(stream=True))
    assert status == 200
    assert "data: [DONE]" not in lines
    error = json.loads(lines[-1].removeprefix("data: "))["error"]
    assert error["type"] == "api_error"


async def test_breaker_opens_fails_fast_then_half_opens(tmp_path: Path) -> None:
    async with fault_upstream(script=("502", "502")) as upstream:
        config = make_config(
            tmp_path,
            upstream.base_url,
            upstream={"max_retries": 0},
            extra={"breaker": {"failure_threshold": 2, "cooldown_s": 0.3}},
        )
        async with proxy_client(config) as (client, service):
            statuses = []
            for _ in range(3):
                r = await client.post("/v1/chat/completions", json=chat(), headers=ECONOMY)
                statuses.append(r.status_code)
            error = assert_openai_error(r, 503)
            open_state = metric(
                service.metrics.render().decode(), "iapo_circuit_state", upstream="up"
            )
            calls_while_open = upstream.stats.chat_requests
            await asyncio.sleep(0.4)  # the cool-down passes; the next call is the probe
            # with no traffic, the gauge still moves on to half-open when scraped
            scraped = (await client.get("/metrics", headers=AUTH)).text
            idle_state = metric(scraped, "iapo_circuit_state", upstream="up")
            probe = await client.post("/v1/chat/completions", json=chat(), headers=ECONOMY)
            closed_state = metric(
                service.metrics.render().decode(), "iapo_circuit_state", upstream="up"
            )
    assert statuses == [502, 502, 503]
    assert "circuit is open" in error["message"]
    assert error["code"] == "circuit_open"  # clients and the log can tell it apart
    assert calls_while_open == 2  # the third request never reached the upstream
    assert open_state == 2
    assert idle_state == 1
    assert probe.status_code == 200
    assert closed_state == 0


async def test_per_upstream_concurrency_limit(tmp_path: Path) -> None:
    async with fault_upstream(latency_ms=50) as upstream:
        config = make_config(
            tmp_path, upstream.base_url, upstream={"max_concurrency": 3, "supports_n": False}
        )
        async with proxy_client(config) as (client, _):
            responses = await asyncio.gather(
                *(
                    client.post("/v1/chat/completions", json=chat(), headers=PREMIUM)
                    for _ in range(4)
                )
            )
    assert [r.status_code for r in responses] == [200] * 4
    assert upstream.stats.chat_requests == 32
    assert upstream.stats.peak_in_flight <= 3


async def test_retry_after_past_the_deadline_is_not_waited_for(tmp_path: Path) -> None:
    async with fault_upstream(error_rates={429: 1.0}, retry_after_s=30) as upstream:
        config = make_config(tmp_path, upstream.base_url, upstream={"max_retries": 3})
        async with proxy_client(config) as (client, _):
            headers = {**ECONOMY, "x-iapo-deadline-ms": "2000"}
            async with asyncio.timeout(10):  # not 30 s: waiting would overrun the deadline
                response = await client.post("/v1/chat/completions", json=chat(), headers=headers)
    assert_openai_error(response, 429)
    assert response.headers["retry-after"] == "30"  # the client learns how long to wait
    assert upstream.stats.chat_requests == 1


def stream_text(lines: list[str]) -> str:
    text = ""
    for line in lines:
        if line.startswith("data: {"):
            for choice in json.loads(line.removeprefix("data: "))["choices"]:
                if choice["index"] == 0:
                    text += choice["delta"].get("content") or ""
    return text


@pytest.mark.parametrize(
    "wire",
    [
        {"fragment_bytes": 1},
        {"fragment_bytes": 7},
        {"close_delimited": True},
        {"pad_bytes": 1_500_000},
    ],
    ids=["1-byte-writes", "7-byte-writes", "close-delimited", "1.5MB-samples"],
)
async def test_healthy_upstreams_with_wire_oddities(tmp_path: Path, wire: dict[str, int]) -> None:
    async with fault_upstream(**wire) as upstream:
        config = make_config(tmp_path, upstream.base_url, upstream={"max_retries": 0})
        async with proxy_client(config) as (client, service):
            tier = ECONOMY if "pad_bytes" in wire else PREMIUM
            task = await client.post("/v1/chat/completions", json=chat(), headers=tier)
            passthrough = await client.post("/v1/chat/completions", json=chat(), headers=AUTH)
            status, lines = await stream_lines(client, AUTH, chat(stream=True))
            task_status, task_lines = await stream_lines(client, tier, chat(stream=True))
            errors = service.metrics.render().decode()
    expected_end = "The answer is \\boxed{42}."
    assert task.status_code == 200, task.text[:300]
    assert task.headers["x-iapo-samples"] in ("1/1", "8/8")
    assert task.json()["choices"][0]["message"]["content"].endswith(expected_end)
    assert passthrough.status_code == 200, passthrough.text[:300]
    content = passthrough.json()["choices"][0]["message"]["content"]
    assert content.endswith(expected_end)
    assert len(content) >= wire.get("pad_bytes", 0)
    assert (status, lines[-1]) == (200, "data: [DONE]")
    assert stream_text(lines).endswith(expected_end)
    assert (task_status, task_lines[-1]) == (200, "data: [DONE]")
    assert stream_text(task_lines).endswith(expected_end)
    # a healthy upstream's odd framing is not an upstream error
    assert metric(errors, "iapo_upstream_errors_total", upstream="up", kind="server_error") in (
        None,
        0.0,
    )
