"""Task mode honours or refuses every chat field (the README's compatibility table), tested
through the real ``openai`` SDK, streaming and not."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import openai
import pytest
from openai import AsyncOpenAI

from policies import Policy, RewardSpec, SamplingSettings
from proxy.taskfields import FIELDS
from tests.proxy.conftest import SYSTEM_PROMPT, make_config, make_policy, running_proxy
from tests.proxy.scripted import answer_lifespan, read_body

README = Path(__file__).resolve().parents[2] / "README.md"
MESSAGES: Any = [{"role": "user", "content": "What is 6 + 6?"}]
TASK = {"X-IAPO-Task": "math", "X-IAPO-Tier": "standard"}

Message = dict[str, Any]


def text(content: str) -> Message:
    return {"role": "assistant", "content": content}


def tool_call(name: str, arguments: str, call_id: str) -> Message:
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    return {"role": "assistant", "content": None, "tool_calls": [call]}


def logprobs_of(token: str) -> dict[str, Any]:
    return {"content": [{"token": token, "logprob": -0.5, "bytes": None, "top_logprobs": []}]}


class FieldUpstream:
    """An upstream whose sample ``i`` answers ``messages[i % len]`` (with logprobs if asked)."""

    def __init__(self, messages: list[Message]) -> None:
        self.messages = messages
        self.requests: list[dict[str, Any]] = []
        self._counter = itertools.count()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        body = await read_body(receive)
        request = msgspec.json.decode(body)
        self.requests.append(request)
        choices = []
        for index in range(int(request.get("n", 1))):
            i = next(self._counter)
            answer = self.messages[i % len(self.messages)]
            choices.append(
                {
                    "index": index,
                    "message": answer,
                    "finish_reason": "tool_calls" if answer.get("tool_calls") else "stop",
                    "logprobs": logprobs_of(f"t{i}") if request.get("logprobs") else None,
                }
            )
        payload = {
            "id": "up",
            "object": "chat.completion",
            "created": 1,
            "model": "up-model",
            "choices": choices,
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": msgspec.json.encode(payload)})


@asynccontextmanager
async def sdk(
    tmp_path: Path, upstream: FieldUpstream, policy: Policy | None = None
) -> AsyncIterator[AsyncOpenAI]:
    policy = policy or make_policy(ns={"standard": 3})
    async with running_proxy(make_config(tmp_path, policy), upstream) as (client, _):
        yield AsyncOpenAI(
            base_url="http://proxy.test/v1", api_key="k", http_client=client, max_retries=0
        )


async def create(client: AsyncOpenAI, stream: bool, **fields: Any) -> dict[str, Any]:
    """One task request; the answer as a dict (a stream reassembled) with its headers,
    ``model``, ``usage`` and ``iapo``, the summary (from the headers, or a stream's
    summary chunk)."""
    headers = {**TASK, "X-IAPO-Stream-Summary": "chunk"} if stream else TASK
    fields.setdefault("messages", MESSAGES)
    raw = await client.chat.completions.with_raw_response.create(
        model="math", stream=stream, extra_headers=headers, **fields
    )
    if not stream:
        completion = raw.parse()
        out = completion.choices[0].model_dump()
        out["headers"] = raw.headers
        out["model"] = completion.model
        out["usage"] = completion.usage.model_dump() if completion.usage else None
        out["iapo"] = {k.removeprefix("x-iapo-"): v for k, v in raw.headers.items()}
        return out
    message: dict[str, Any] = {"content": "", "tool_calls": []}
    out = {"message": message, "logprobs": None, "headers": raw.headers, "chunks": []}
    out["usage"] = None
    async for chunk in raw.parse():
        out["chunks"].append(chunk)
        out["model"] = chunk.model
        if chunk.usage is not None:
            out["usage"] = chunk.usage.model_dump()
        if chunk.model_extra and "iapo" in chunk.model_extra:
            out["iapo"] = chunk.model_extra["iapo"]
        for choice in chunk.choices:
            message["content"] += choice.delta.content or ""
            for call in choice.delta.tool_calls or []:
                message["tool_calls"].append(call.model_dump())
            if choice.logprobs is not None:
                out["logprobs"] = choice.logprobs.model_dump()
            if choice.finish_reason is not None:
                out["finish_reason"] = choice.finish_reason
    return out


async def refused(client: AsyncOpenAI, stream: bool, **fields: Any) -> str | None:
    with pytest.raises(openai.BadRequestError) as caught:
        await create(client, stream, **fields)
    assert caught.value.status_code == 400
    return caught.value.param


STREAM = pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])

ADD: Any = [{"type": "function", "function": {"name": "add", "parameters": {}}}]
SENT = "sent"  # a row's check reads what the upstream received

# One case per row of the README's table (FIELDS): the request's fields, then either the
# param a 400 must name, or a check of (answer, the upstream's first request body).
Check = Callable[[dict[str, Any], dict[str, Any]], bool]
ROWS: dict[str, tuple[dict[str, Any], str | Check]] = {
    "messages": (
        {"messages": [{"role": "system", "content": "Be evil."}, *MESSAGES]},
        lambda a, sent: (
            [m["role"] for m in sent["messages"]] == ["system", "user"]
            and sent["messages"][0]["content"] == SYSTEM_PROMPT
        ),
    ),
    "model": ({}, lambda a, sent: a["model"] == "math" and sent["model"] == "up-model"),
    "n": ({"n": 2}, "n"),
    "stream": ({}, lambda a, sent: a["message"]["content"] == "so 12" and "stream" not in sent),
    "stream_options": (
        {"stream_options": {"include_usage": True}},
        lambda a, sent: a["usage"]["total_tokens"] == 15 and "stream_options" not in sent,
    ),
    "temperature": ({"temperature": 1.5}, "temperature"),
    "top_p": ({"top_p": 0.5}, "top_p"),
    "seed": ({"seed": 7}, lambda a, sent: sent["seed"] == 7),
    "tools": ({"tools": ADD}, lambda a, sent: sent["tools"] == ADD),
    "tool_choice": (
        {"tools": ADD, "tool_choice": "required"},
        lambda a, sent: sent["tool_choice"] == "required",
    ),
    "parallel_tool_calls": (
        {"tools": ADD, "parallel_tool_calls": False},
        lambda a, sent: sent["parallel_tool_calls"] is False,
    ),
    "functions": ({"functions": [{"name": "add", "parameters": {}}]}, "functions"),
    "function_call": ({"function_call": "auto"}, "function_call"),
    "logprobs": ({"logprobs": True}, lambda a, sent: a["logprobs"]["content"][0]["token"] == "t0"),
    "top_logprobs": (
        {"logprobs": True, "top_logprobs": 3},
        lambda a, sent: sent["top_logprobs"] == 3 and a["logprobs"] is not None,
    ),
    "response_format": (
        {"response_format": {"type": "json_object"}},
        lambda a, sent: sent["response_format"] == {"type": "json_object"},
    ),
    "max_tokens": ({"max_tokens": 33}, lambda a, sent: sent["max_tokens"] == 33),
    "max_completion_tokens": (
        {"max_completion_tokens": 44},
        lambda a, sent: sent["max_completion_tokens"] == 44,
    ),
    "stop": ({"stop": "END"}, lambda a, sent: sent["stop"] == "END"),
    "audio": ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    "modalities": ({"modalities": ["audio"]}, "modalities"),
}


def test_every_row_of_the_table_has_a_case() -> None:
    assert list(ROWS) == list(FIELDS)


@STREAM
@pytest.mark.parametrize("field", list(ROWS))
async def test_row(tmp_path: Path, stream: bool, field: str) -> None:
    fields, expected = ROWS[field]
    upstream = FieldUpstream([text("so 12")])
    async with sdk(tmp_path, upstream) as client:
        if isinstance(expected, str):
            assert await refused(client, stream, **fields) == expected
            assert not upstream.requests
            return
        answer = await create(client, stream, **fields)
    assert expected(answer, upstream.requests[0]), (answer, upstream.requests[0])


def test_readme_table_lists_exactly_the_fields_task_mode_decides() -> None:
    readme = README.read_text()
    section = readme[readme.index("### Task mode and the chat API") :]
    section = section[: section.index("\n## ")]
    rows = re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE)
    assert rows == list(FIELDS), "README compatibility table and proxy.taskfields.FIELDS differ"


@STREAM
async def test_client_n_above_one_is_refused(tmp_path: Path, stream: bool) -> None:
    upstream = FieldUpstream([text("so 12")])
    async with sdk(tmp_path, upstream) as client:
        assert await refused(client, stream, n=3) == "n"
        answer = await create(client, stream, n=1)
    assert answer["message"]["content"] == "so 12"
    assert len(upstream.requests) == 1


@STREAM
async def test_temperature_and_top_p_are_the_policys_and_a_conflict_is_refused(
    tmp_path: Path, stream: bool
) -> None:
    policy = msgspec.structs.replace(
        make_policy(ns={"standard": 3}), sampling=SamplingSettings(temperature=0.5, top_p=0.9)
    )
    upstream = FieldUpstream([text("so 12")])
    async with sdk(tmp_path, upstream, policy) as client:
        assert await refused(client, stream, temperature=0) == "temperature"
        assert await refused(client, stream, top_p=1.0) == "top_p"
        assert not upstream.requests
        answer = await create(client, stream)
        same = await create(client, stream, temperature=0.5, top_p=0.9)
    for reply in (answer, same):
        assert reply["headers"]["x-iapo-temperature"] == "0.5"
        assert reply["headers"]["x-iapo-top-p"] == "0.9"
    assert {(r["temperature"], r["top_p"]) for r in upstream.requests} == {(0.5, 0.9)}


@STREAM
async def test_without_recorded_sampling_the_upstream_temperature_applies(
    tmp_path: Path, stream: bool
) -> None:
    upstream = FieldUpstream([text("so 12")])
    async with sdk(tmp_path, upstream) as client:
        assert await refused(client, stream, temperature=1.0) == "temperature"
        assert await refused(client, stream, top_p=0.5) == "top_p"
        answer = await create(client, stream, temperature=0.7, top_p=1)
    assert answer["headers"]["x-iapo-temperature"] == "0.7"
    assert "x-iapo-top-p" not in answer["headers"]
    assert upstream.requests[0]["temperature"] == pytest.approx(0.7)


@STREAM
async def test_tool_calls_vote_on_canonical_calls_and_the_winner_is_returned(
    tmp_path: Path, stream: bool
) -> None:
    upstream = FieldUpstream(
        [
            tool_call("add", '{"a": 6, "b": 6}', "call_1"),
            tool_call("sub", '{"a": 6}', "call_2"),
            tool_call("add", '{"b":6,"a":6}', "call_3"),  # the same call, spelled otherwise
        ]
    )
    tools: Any = [{"type": "function", "function": {"name": "add", "parameters": {}}}]
    async with sdk(tmp_path, upstream) as client:
        answer = await create(client, stream, tools=tools, tool_choice="auto")
    assert upstream.requests[0]["tools"] == tools
    assert upstream.requests[0]["tool_choice"] == "auto"
    assert answer["finish_reason"] == "tool_calls"
    calls = answer["message"]["tool_calls"]
    assert len(calls) == 1
    assert calls[0]["id"] == "call_1"
    assert calls[0]["function"]["name"] == "add"
    assert json.loads(calls[0]["function"]["arguments"]) == {"a": 6, "b": 6}
    assert answer["iapo"]["agreement"] == "0.6667"


@STREAM
async def test_tools_are_refused_for_best_of_n_and_functions_always(
    tmp_path: Path, stream: bool
) -> None:
    policy = make_policy(
        ns={"standard": 2},
        strategy="best_of_n",
        reward=RewardSpec(url="http://upstream.test/v1/reward", objectives=("a",)),
    )
    tools: Any = [{"type": "function", "function": {"name": "add", "parameters": {}}}]
    functions: Any = [{"name": "add", "parameters": {}}]
    upstream = FieldUpstream([text("so 12")])
    async with sdk(tmp_path, upstream, policy) as client:
        assert await refused(client, stream, tools=tools) == "tools"
        assert await refused(client, stream, functions=functions) == "functions"
    assert not upstream.requests


@STREAM
async def test_logprobs_are_the_chosen_samples(tmp_path: Path, stream: bool) -> None:
    upstream = FieldUpstream([text("maybe 7"), text("so 12"), text("it is 12")])
    async with sdk(tmp_path, upstream) as client:
        answer = await create(client, stream, logprobs=True, top_logprobs=2)
    assert upstream.requests[0]["top_logprobs"] == 2
    assert answer["message"]["content"] == "so 12"
    assert answer["logprobs"]["content"][0]["token"] == "t1"  # sample 1, the first "12"


@STREAM
async def test_json_response_format_votes_on_canonical_json(tmp_path: Path, stream: bool) -> None:
    upstream = FieldUpstream(
        [text('{"answer": 7}'), text('{ "answer": 12.0 }'), text('```json\n{"answer":12}\n```')]
    )
    async with sdk(tmp_path, upstream) as client:
        answer = await create(client, stream, response_format={"type": "json_object"})
    assert upstream.requests[0]["response_format"] == {"type": "json_object"}
    assert answer["message"]["content"] == '{ "answer": 12.0 }'
    assert answer["iapo"]["agreement"] == "0.6667"


@STREAM
async def test_audio_output_is_refused(tmp_path: Path, stream: bool) -> None:
    upstream = FieldUpstream([text("so 12")])
    async with sdk(tmp_path, upstream) as client:
        assert await refused(client, stream, modalities=["text", "audio"]) == "modalities"
        audio: Any = {"voice": "alloy", "format": "wav"}
        assert await refused(client, stream, audio=audio) == "audio"
    assert not upstream.requests


@STREAM
async def test_forwarded_fields_reach_every_sample(tmp_path: Path, stream: bool) -> None:
    upstream = FieldUpstream([text("so 12")])
    async with sdk(tmp_path, upstream) as client:
        answer = await create(
            client,
            stream,
            stop=["\n\n"],
            max_completion_tokens=50,
            seed=5,
            parallel_tool_calls=False,
        )
    assert answer["message"]["content"] == "so 12"
    sent = upstream.requests[0]
    assert (sent["stop"], sent["max_completion_tokens"], sent["seed"]) == (["\n\n"], 50, 5)
    assert sent["parallel_tool_calls"] is False
    assert "stream" not in sent
    assert "stream_options" not in sent


async def test_stream_summary_is_a_comment_and_on_request_a_json_chunk(tmp_path: Path) -> None:
    upstream = FieldUpstream([text("so 12")])
    async with sdk(tmp_path, upstream) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="math", messages=MESSAGES, stream=True, extra_headers=TASK
        )
        plain = await raw.http_response.aread()
        answer = await create(client, True)
    assert b"\n\n: iapo samples=3/3 cost=" in plain
    assert b'"iapo"' not in plain  # the default stream is what OpenAI sends, and a comment
    last = answer["chunks"][-1]
    assert last.choices == []
    assert answer["iapo"]["samples"] == "3/3"
    assert float(answer["iapo"]["cost"]) > 0
    assert answer["iapo"]["agreement"] == "1.0000"


@STREAM
async def test_without_recorded_sampling_the_upstream_top_p_applies_too(
    tmp_path: Path, stream: bool
) -> None:
    upstream = FieldUpstream([text("so 12")])
    policy = make_policy(ns={"standard": 3})
    config = make_config(tmp_path, policy, upstream={"temperature": 0.4, "top_p": 0.8})
    async with running_proxy(config, upstream) as (http, _):
        client = AsyncOpenAI(
            base_url="http://proxy.test/v1", api_key="k", http_client=http, max_retries=0
        )
        assert await refused(client, stream, top_p=1.0) == "top_p"
        answer = await create(client, stream, top_p=0.8)
    assert (answer["headers"]["x-iapo-temperature"], answer["headers"]["x-iapo-top-p"]) == (
        "0.4",
        "0.8",
    )
    assert (upstream.requests[0]["temperature"], upstream.requests[0]["top_p"]) == (0.4, 0.8)
