"""The fault-injecting upstream itself: each fault kind does what it says."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from iapo.testing import FaultPlan, FaultUpstream, pick_fault
from policies import ExtractorSpec, make_extractor

CHAT = {"model": "m", "messages": [{"role": "user", "content": "what is six times seven?"}]}


async def post(
    upstream: FaultUpstream, body: dict[str, object], **kwargs: object
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=upstream.base_url, timeout=5) as client:
        return await client.post("/chat/completions", json=body, **kwargs)  # type: ignore[arg-type]


async def test_answers_n_choices_the_openai_sdk_parses() -> None:
    async with FaultUpstream(FaultPlan(answers=("7", "9"), answer_weights=(1, 0))) as upstream:
        client = openai.AsyncOpenAI(base_url=upstream.base_url, api_key="k", max_retries=0)
        completion = await client.chat.completions.create(n=4, **CHAT)  # type: ignore[call-overload]
        await client.close()
    assert len(completion.choices) == 4
    boxed = make_extractor(ExtractorSpec(kind="boxed"))
    last_number = make_extractor(ExtractorSpec(kind="last_number"))
    assert {boxed(c.message.content) for c in completion.choices} == {"7"}
    assert {last_number(c.message.content) for c in completion.choices} == {"7"}
    assert completion.usage is not None
    assert completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    assert upstream.stats.completed == 1
    assert upstream.stats.choices_served == 4
    assert upstream.received[0].n == 4


@pytest.mark.parametrize("n", [True, 0, 129, "4", 2.0])
async def test_an_unusable_n_is_one_choice_not_a_crash(n: object) -> None:
    # the fuzz suite forwards such bodies through pass-through; a crash here reset the
    # connection and tripped the proxy's breaker
    async with FaultUpstream(FaultPlan()) as upstream:
        response = await post(upstream, {**CHAT, "n": n})
    assert response.status_code == 200, response.text
    assert len(response.json()["choices"]) == 1


@pytest.mark.parametrize(
    ("plan", "expected"), [({"ignore_n": True}, 1), ({"fewer_choices": True}, 3)]
)
async def test_ignores_n_or_answers_fewer_choices(plan: dict[str, bool], expected: int) -> None:
    async with FaultUpstream(FaultPlan(**plan)) as upstream:  # type: ignore[arg-type]
        response = await post(upstream, {**CHAT, "n": 5})
    assert response.status_code == 200
    assert len(response.json()["choices"]) == expected


async def test_scripted_statuses_in_openai_error_shape() -> None:
    plan = FaultPlan(script=("429", "500", "502", "503", "ok"), retry_after_s=3)
    async with FaultUpstream(plan) as upstream:
        responses = [await post(upstream, CHAT) for _ in range(5)]
    assert [r.status_code for r in responses] == [429, 500, 502, 503, 200]
    assert responses[0].headers["retry-after"] == "3"
    for response in responses[:4]:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
    assert responses[0].json()["error"]["type"] == "rate_limit_error"
    assert upstream.stats.faults["429"] == 1
    assert upstream.stats.faults["ok"] == 1


async def test_reset_is_a_transport_error() -> None:
    async with FaultUpstream(FaultPlan(script=("reset",))) as upstream:
        with pytest.raises(httpx.TransportError):
            await post(upstream, CHAT)
        # the server survives a reset and answers the next request
        assert (await post(upstream, CHAT)).status_code == 200


async def test_malformed_body_is_not_json() -> None:
    async with FaultUpstream(FaultPlan(script=("malformed",))) as upstream:
        response = await post(upstream, CHAT)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


async def test_truncated_body_is_a_protocol_error() -> None:
    async with FaultUpstream(FaultPlan(script=("truncate",))) as upstream:
        with pytest.raises(httpx.RemoteProtocolError):
            await post(upstream, CHAT)


async def test_hang_notices_the_client_giving_up() -> None:
    async with FaultUpstream(FaultPlan(script=("hang",))) as upstream:
        async with httpx.AsyncClient(base_url=upstream.base_url, timeout=0.2) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post("/chat/completions", json=CHAT)
        async with asyncio.timeout(5):
            await upstream.wait_idle()
    assert upstream.stats.disconnected == 1
    assert upstream.stats.completed == 0


async def test_stream_ok_with_usage_through_the_sdk() -> None:
    async with FaultUpstream(FaultPlan(answers=("12",))) as upstream:
        client = openai.AsyncOpenAI(base_url=upstream.base_url, api_key="k", max_retries=0)
        stream = await client.chat.completions.create(  # type: ignore[call-overload]
            n=2, stream=True, stream_options={"include_usage": True}, **CHAT
        )
        texts = ["", ""]
        usage = None
        async for chunk in stream:
            for choice in chunk.choices:
                texts[choice.index] += choice.delta.content or ""
            usage = chunk.usage or usage
        await client.close()
    assert all("\\boxed{12}" in text for text in texts)
    assert usage is not None
    assert usage.completion_tokens == sum(len(t.split()) for t in texts)
    assert upstream.stats.completed == 1


async def stream_lines(upstream: FaultUpstream, read_timeout: float = 5) -> list[str]:
    lines: list[str] = []
    async with (
        httpx.AsyncClient(base_url=upstream.base_url, timeout=read_timeout) as client,
        client.stream("POST", "/chat/completions", json={**CHAT, "stream": True}) as response,
    ):
        async for line in response.aiter_lines():
            if line:
                lines.append(line)
    return lines


async def test_truncated_stream_is_a_protocol_error() -> None:
    async with FaultUpstream(FaultPlan(script=("truncate",))) as upstream:
        with pytest.raises(httpx.RemoteProtocolError):
            await stream_lines(upstream)
        assert len(await stream_lines(upstream)) > 3  # the next one is whole


async def test_malformed_stream_carries_a_bad_event() -> None:
    async with FaultUpstream(FaultPlan(script=("malformed",))) as upstream:
        lines = await stream_lines(upstream)
    assert "data: {this is not json" in lines
    assert upstream.stats.choices_served == 0


async def test_stalled_stream_counts_the_disconnect() -> None:
    async with FaultUpstream(FaultPlan(script=("stall",))) as upstream:
        with pytest.raises(httpx.ReadTimeout):
            await stream_lines(upstream, read_timeout=0.3)
        async with asyncio.timeout(5):
            await upstream.wait_idle()
    assert upstream.stats.disconnected == 1


async def test_marker_and_header_pick_the_fault() -> None:
    marked = {"model": "m", "messages": [{"role": "user", "content": "x [[fault:503]] y"}]}
    async with FaultUpstream() as upstream:
        assert (await post(upstream, marked)).status_code == 503
        assert (await post(upstream, CHAT, headers={"x-fault": "429"})).status_code == 429
        assert (await post(upstream, CHAT)).status_code == 200


def test_mix_is_seeded_and_near_its_rates(seed: int) -> None:
    plan = FaultPlan.uniform(0.2)
    draws = [pick_fault(plan, np.random.default_rng(seed), i) for i in range(3)]
    rng_a, rng_b = np.random.default_rng(seed), np.random.default_rng(seed)
    a = [pick_fault(plan, rng_a, i) for i in range(4000)]
    b = [pick_fault(plan, rng_b, i) for i in range(4000)]
    assert a == b, f"seed={seed}"
    faulty = sum(kind != "ok" for kind in a) / len(a)
    assert 0.17 < faulty < 0.23, f"seed={seed} faulty={faulty}"
    assert len(draws) == 3
    assert set(a) - {"ok"} == set(plan.mix())


def test_plan_rejects_impossible_mixes() -> None:
    with pytest.raises(ValueError, match="more than 1"):
        FaultPlan(reset_prob=0.6, malformed_prob=0.6)
    with pytest.raises(ValueError, match="302/401/403/429/500/502/503"):
        FaultPlan(error_rates={418: 0.1})


async def test_bad_http_gets_400_and_the_server_survives() -> None:
    async with FaultUpstream() as upstream:
        reader, writer = await asyncio.open_connection("127.0.0.1", upstream.port)
        writer.write(b"NONSENSE\r\n\r\n")
        await writer.drain()
        head = await reader.read(100)
        writer.close()
        await writer.wait_closed()
        assert head.startswith(b"HTTP/1.1 400")
        assert (await post(upstream, {"not": "chat"})).status_code == 400
        assert (await post(upstream, CHAT)).status_code == 200


def test_cli_serves_until_sigterm_and_prints_counters(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "iapo.testing",
            "--port-file",
            str(port_file),
            "--seed",
            "3",
            "--log",
            str(tmp_path / "calls.jsonl"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("listening on http://127.0.0.1:")
        port = int(port_file.read_text())
        tagged = {"model": "m", "n": 3, "messages": [{"role": "user", "content": "[[tag:r-7]] hi"}]}
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        response = httpx.post(url, json=tagged, timeout=5)
        assert response.status_code == 200
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["completed"] == 1
    assert stats["chat_requests"] == 1
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert calls == [{"i": 0, "fault": "ok", "n": 3, "choices": 3, "stream": False, "tag": "r-7"}]


async def post_to(upstream: FaultUpstream, path: str, body: object) -> httpx.Response:
    async with httpx.AsyncClient(base_url=upstream.base_url, timeout=5) as client:
        return await client.post(path, json=body)


async def test_reward_contract_scores_the_best_answer_and_takes_faults() -> None:
    request = {
        "candidates": ["so \\boxed{42}.", "so \\boxed{7}."],
        "objectives": ["quality", "safety"],
        "messages": [{"role": "user", "content": "q"}],
    }
    async with FaultUpstream(FaultPlan(script=("ok", "503"))) as upstream:
        ok = await post_to(upstream, "/reward", request)
        failed = await post_to(upstream, "/reward", request)
        bad = await post_to(upstream, "/reward", {"candidates": "x"})
    assert ok.json() == {"objectives": ["quality", "safety"], "scores": [[1.0, 1.0], [0.0, 0.0]]}
    assert failed.status_code == 503
    assert bad.status_code == 400
    assert upstream.stats.reward_requests == 3


async def test_close_delimited_and_fragmented_answers_parse() -> None:
    plan = FaultPlan(close_delimited=True, fragment_bytes=3, pad_bytes=1000)
    async with FaultUpstream(plan) as upstream:
        response = await post(upstream, CHAT)
    assert "content-length" not in response.headers
    assert response.headers["connection"] == "close"
    assert len(response.json()["choices"][0]["message"]["content"]) > 1000
