"""The proxy on a real socket, driven by the real openai SDK (sync and async, stream or not)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from policies import RewardSpec
from tests.e2e.conftest import proxy_server, upstream_server, wait_until
from tests.proxy.conftest import SYSTEM_PROMPT, make_config, make_policy
from tests.proxy.scripted import PASSTHROUGH_BODY, ScriptedUpstream

pytestmark = pytest.mark.e2e

ANSWERS = ["So it is 12.", "I get 7", "12", "Answer: 12", "no idea", "7", "12", "7"]
QUESTION = [{"role": "user", "content": "What is 6 + 6?"}]
TASK = {"X-IAPO-Task": "math"}


def sample_value(metrics_text: str, name: str, labels: dict[str, str]) -> float:
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_sync_sdk_majority_vote_headers_usage_and_metrics(tmp_path: Path) -> None:
    upstream = ScriptedUpstream(ANSWERS)
    with upstream_server(upstream) as up:
        config = make_config(tmp_path, base_url=up + "/v1", task={"aliases": ["math-solver"]})
        with proxy_server(config) as proxy:
            client = openai.OpenAI(base_url=proxy.v1, api_key="unused", max_retries=0)
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=QUESTION, extra_headers={**TASK, "X-IAPO-Tier": "standard"}
            )
            completion = raw.parse()
            assert completion.choices[0].message.content == "So it is 12."
            assert completion.usage is not None
            assert completion.usage.total_tokens == 10 + 4 * 5
            assert raw.headers["x-iapo-samples"] == "4/4"
            assert raw.headers["x-iapo-agreement"] == "0.7500"
            assert upstream.requests[0]["messages"][0]["content"] == SYSTEM_PROMPT
            # the alias picks the task, the tier header picks N
            client.chat.completions.create(
                model="math-solver", messages=QUESTION, extra_headers={"X-IAPO-Tier": "premium"}
            )
            assert upstream.sample_ns() == [4, 8]
            text = httpx.get(proxy.url + "/metrics").text
    labels = {"task": "math", "tier": "standard", "strategy": "majority", "status_class": "2xx"}
    assert sample_value(text, "iapo_requests_total", labels) == 1
    assert sample_value(text, "iapo_samples_total", {"task": "math", "tier": "premium"}) == 8
    assert sample_value(text, "iapo_prompt_tokens_total", {"task": "math", "tier": "premium"}) == 10
    assert sample_value(text, "iapo_completion_tokens_total", {"tier": "premium"}) == 40
    assert (
        sample_value(
            text, "iapo_upstream_requests_total", {"upstream": "up", "status_class": "2xx"}
        )
        == 2
    )
    assert sample_value(text, "iapo_policy_n", {"task": "math", "tier": "premium"}) == 8


async def test_async_sdk_streaming_task_answer_with_usage(tmp_path: Path) -> None:
    upstream = ScriptedUpstream(ANSWERS, latency_s=0.2)
    with upstream_server(upstream) as up:
        config = make_config(tmp_path, base_url=up + "/v1")
        with proxy_server(config) as proxy:
            async with openai.AsyncOpenAI(base_url=proxy.v1, api_key="x", max_retries=0) as client:
                stream = await client.chat.completions.create(
                    model="math",
                    messages=QUESTION,
                    stream=True,
                    stream_options={"include_usage": True},
                    extra_headers=TASK,
                )
                chunks = [chunk async for chunk in stream]
            # keep-alive comments reach the wire while the samples run (SDKs skip them)
            async with (
                httpx.AsyncClient() as http,
                http.stream(
                    "POST",
                    proxy.v1 + "/chat/completions",
                    json={"model": "math", "messages": QUESTION, "stream": True},
                    headers=TASK,
                ) as response,
            ):
                wire = b"".join([part async for part in response.aiter_bytes()])
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "So it is 12."
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 20
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert wire.startswith(b": keep-alive\n\n")
    assert wire.endswith(b"\n\ndata: [DONE]\n\n")
    # the x-iapo-* figures a streaming client cannot get as headers, as a last comment
    assert b"\n\n: iapo samples=4/4 cost=0.05 agreement=0." in wire


async def test_async_sdk_non_streaming_best_of_n_picks_highest_weighted_score(
    tmp_path: Path,
) -> None:
    # helpfulness favours "7", brevity favours "12": tier weights decide
    scores = {"long answer 7": [0.9, 0.1], "12": [0.2, 0.8]}
    upstream = ScriptedUpstream(["long answer 7", "12"], rewards=lambda c: scores[c])
    with upstream_server(upstream) as up:
        reward = RewardSpec(url=up + "/reward", objectives=("helpful", "brief"))
        policy = make_policy(
            ns={"economy": 2, "premium": 2},
            strategy="best_of_n",
            reward=reward,
            weights={"economy": {"brief": 1.0}, "premium": {"helpful": 1.0}},
        )
        config = make_config(tmp_path, policy, base_url=up + "/v1")
        with proxy_server(config) as proxy:
            async with openai.AsyncOpenAI(base_url=proxy.v1, api_key="x", max_retries=0) as client:
                answers = {}
                for tier in ("economy", "premium"):
                    raw = await client.chat.completions.with_raw_response.create(
                        model="math", messages=QUESTION, extra_headers={**TASK, "X-IAPO-Tier": tier}
                    )
                    answers[tier] = (raw.parse().choices[0].message.content, raw.headers)
    assert answers["economy"][0] == "12"
    assert answers["premium"][0] == "long answer 7"
    assert float(answers["premium"][1]["x-iapo-score"]) == pytest.approx(0.9)
    assert upstream.reward_requests[0]["candidates"] == ["long answer 7", "12"]
    assert upstream.reward_requests[0]["objectives"] == ["helpful", "brief"]


def test_passthrough_is_byte_faithful_and_streams(tmp_path: Path) -> None:
    upstream = ScriptedUpstream()
    with upstream_server(upstream) as up:
        config = make_config(tmp_path, base_url=up + "/v1")
        with proxy_server(config) as proxy:
            request = (
                b'{"model":"passthrough-model", "messages":[{"role":"user","content":"hi"}],'
                b'"x_custom":{"a":1}}'
            )
            response = httpx.post(
                proxy.v1 + "/chat/completions",
                content=request,
                headers={"content-type": "application/json", "authorization": "Bearer client-key"},
            )
            client = openai.OpenAI(base_url=proxy.v1, api_key="x", max_retries=0)
            stream = client.chat.completions.create(
                model="other-model", messages=QUESTION, stream=True
            )
            streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert response.status_code == 200
    assert response.content == PASSTHROUGH_BODY
    assert upstream.raw_requests[0] == request
    # the client's key never reaches the upstream
    assert "authorization" not in upstream.headers[0]
    assert streamed == "Hello world"
    assert upstream.requests[1]["stream"] is True


def test_passthrough_stream_broken_upstream_ends_with_an_error(tmp_path: Path) -> None:
    upstream = ScriptedUpstream(break_stream_after=2)
    with upstream_server(upstream) as up:
        config = make_config(tmp_path, base_url=up + "/v1")
        with proxy_server(config) as proxy:
            client = openai.OpenAI(base_url=proxy.v1, api_key="x", max_retries=0)
            stream = client.chat.completions.create(model="m", messages=QUESTION, stream=True)
            received: list[str] = []

            def consume() -> None:
                for chunk in stream:
                    received.append(chunk.choices[0].delta.content or "")

            with pytest.raises(openai.APIError):
                consume()
    assert received == ["Hel", "lo"]


def test_errors_map_to_openai_exceptions(tmp_path: Path) -> None:
    upstream = ScriptedUpstream(supports_n=False)
    with upstream_server(upstream) as up:
        config = make_config(tmp_path, base_url=up + "/v1", supports_n=False)
        with proxy_server(config) as proxy:
            client = openai.OpenAI(base_url=proxy.v1, api_key="x", max_retries=0)
            with pytest.raises(openai.BadRequestError) as unknown:
                client.chat.completions.create(
                    model="m", messages=QUESTION, extra_headers={"X-IAPO-Task": "nope"}
                )
            upstream.always_fail = 429
            upstream.fail_next([(429, {"retry-after": "7"})] * 4)
            with pytest.raises(openai.RateLimitError) as limited:
                client.chat.completions.create(model="m", messages=QUESTION, extra_headers=TASK)
            upstream.always_fail = 500
            with pytest.raises(openai.InternalServerError) as failed:
                client.chat.completions.create(model="m", messages=QUESTION, extra_headers=TASK)
            upstream.always_fail = 503
            with pytest.raises(openai.InternalServerError) as unavailable:
                client.chat.completions.create(model="m", messages=QUESTION, extra_headers=TASK)
    assert unknown.value.code == "unknown_task"
    assert "valid tasks: math" in unknown.value.message
    assert limited.value.status_code == 429
    assert limited.value.response.headers["retry-after"] == "7"
    assert limited.value.response.headers["x-should-retry"] == "true"
    assert failed.value.status_code == 502
    assert unavailable.value.status_code == 503
    assert unavailable.value.response.headers["x-should-retry"] == "true"


def test_client_disconnect_cancels_upstream_calls_and_logs_spend(tmp_path: Path) -> None:
    upstream = ScriptedUpstream(latency_s=3.0, supports_n=False)
    with upstream_server(upstream) as up:
        config = make_config(tmp_path, base_url=up + "/v1", supports_n=False)
        with proxy_server(config) as proxy:
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(
                    proxy.v1 + "/chat/completions",
                    json={"model": "math", "messages": QUESTION},
                    headers=TASK,
                    timeout=httpx.Timeout(0.5),
                )
            assert wait_until(lambda: upstream.cancelled == 4)
            assert wait_until(lambda: proxy.service.in_flight == 0)
            assert upstream.completed == 0
    with sqlite3.connect(tmp_path / "requests.sqlite") as db:
        rows = db.execute(
            "SELECT status, samples_launched, samples_cancelled, samples_used FROM request_log"
        ).fetchall()
    assert rows == [(499, 4, 4, 0)]
