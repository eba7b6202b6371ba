"""The simulator's HTTP face: an OpenAI-compatible upstream plus the iapo reward contract.

- ``POST /v1/chat/completions``: JSON or ``stream: true`` SSE ending in ``data: [DONE]``;
  honours ``n``, ``seed``, ``max_tokens`` / ``max_completion_tokens`` and
  ``stream_options.include_usage``;
- ``POST /v1/reward``: ``policies.reward`` (RewardRequest in, RewardResponse out);
- ``GET /v1/models``, ``GET /healthz`` (with ``unknown_prompts``: chat requests whose
  prompt the table does not know, which got the prompts' average behaviour; each such
  response also carries ``x-iapo-sim-unknown-prompt: 1``).

Errors use the OpenAI error body, so the ``openai`` SDK raises its usual exceptions.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
from litestar import Litestar, Request, Response, get, post
from litestar.response import Stream

from iapo.simulator.engine import Completion, Simulator
from policies.errors import ApiError, InvalidRequest
from policies.reward import RewardRequest, RewardResponse

__all__ = ["UNKNOWN_PROMPT_HEADER", "SimulatorStats", "create_app"]

UNKNOWN_PROMPT_HEADER = "x-iapo-sim-unknown-prompt"

_MAX_N = 1024


class _ChatView(msgspec.Struct, frozen=True):
    """The fields of a chat request the simulator reads; the rest are ignored."""

    messages: list[dict[str, Any]]
    model: str | None = None
    n: int | None = None
    stream: bool | None = False
    seed: int | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stream_options: dict[str, Any] | None = None


@dataclass
class SimulatorStats:
    """What the simulator served, for tests and the demo's summary."""

    chat_requests: int = 0
    samples: int = 0
    completion_tokens: int = 0
    reward_requests: int = 0
    scored: int = 0
    unknown_prompts: int = 0


def _decode(body: bytes, kind: type[Any]) -> Any:
    try:
        raw = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    try:
        return msgspec.convert(raw, kind)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid request: {exc}") from None


def _usage(completion: Completion) -> dict[str, int]:
    return {
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "total_tokens": completion.prompt_tokens + completion.completion_tokens,
    }


def _body(completion: Completion, model: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-sim-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": sample.text},
                "finish_reason": sample.finish_reason,
                "logprobs": None,
            }
            for i, sample in enumerate(completion.samples)
        ],
        "usage": _usage(completion),
    }


async def _events(completion: Completion, model: str, include_usage: bool) -> AsyncIterator[bytes]:
    encode = msgspec.json.encode
    base: dict[str, Any] = {
        "id": f"chatcmpl-sim-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }
    if include_usage:
        base["usage"] = None

    def chunk(index: int, delta: dict[str, Any], finish: str | None) -> bytes:
        choice = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
        return b"data: " + encode({**base, "choices": [choice]}) + b"\n\n"

    for index, sample in enumerate(completion.samples):
        yield chunk(index, {"role": "assistant", "content": ""}, None)
        words = sample.text.split(" ")
        # a few pieces per sample, as a token stream would arrive
        step = max(1, len(words) // 4)
        for start in range(0, len(words), step):
            piece = " ".join(words[start : start + step])
            yield chunk(index, {"content": piece if start == 0 else " " + piece}, None)
        yield chunk(index, {}, sample.finish_reason)
    if include_usage:
        yield b"data: " + encode({**base, "choices": [], "usage": _usage(completion)}) + b"\n\n"
    yield b"data: [DONE]\n\n"


def create_app(
    simulator: Simulator,
    *,
    latency_s: float = 0.0,
    model: str = "iapo-sim",
    stats: SimulatorStats | None = None,
    rng: np.random.Generator | None = None,
) -> Litestar:
    """The litestar app serving ``simulator``.

    ``latency_s`` delays each chat response by a uniform draw from [0.5, 1.5]·latency_s,
    so end-to-end latencies look like an LLM's (0 in tests).
    """
    counters = stats if stats is not None else SimulatorStats()
    jitter = rng if rng is not None else np.random.default_rng(0)

    @post("/v1/chat/completions", status_code=200)
    async def chat_completions(request: Request[Any, Any, Any]) -> Response[bytes] | Stream:
        view: _ChatView = _decode(await request.body(), _ChatView)
        n = 1 if view.n is None else view.n
        if not 1 <= n <= _MAX_N:
            raise InvalidRequest(f"n must be between 1 and {_MAX_N}, got {n}", param="n")
        limit = view.max_completion_tokens or view.max_tokens
        completion = simulator.complete(view.messages, n, seed=view.seed, max_tokens=limit)
        counters.chat_requests += 1
        counters.samples += n
        counters.completion_tokens += completion.completion_tokens
        headers = {}
        if not completion.prompt_known:
            counters.unknown_prompts += 1
            headers[UNKNOWN_PROMPT_HEADER] = "1"
        if latency_s > 0:
            await asyncio.sleep(latency_s * (0.5 + float(jitter.random())))
        name = view.model or model
        if view.stream:
            include_usage = bool((view.stream_options or {}).get("include_usage"))
            return Stream(
                _events(completion, name, include_usage),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache", **headers},
            )
        return Response(
            msgspec.json.encode(_body(completion, name)),
            media_type="application/json",
            headers=headers,
        )

    @post("/v1/reward", status_code=200)
    async def reward(request: Request[Any, Any, Any]) -> Response[bytes]:
        asked: RewardRequest = _decode(await request.body(), RewardRequest)
        scores = simulator.score(asked.candidates, asked.objectives)
        counters.reward_requests += 1
        counters.scored += len(asked.candidates)
        answer = RewardResponse(objectives=list(asked.objectives), scores=scores)
        return Response(msgspec.json.encode(answer), media_type="application/json")

    @get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": model, "object": "model", "created": 0, "owned_by": "iapo"}],
        }

    @get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "unknown_prompts": counters.unknown_prompts}

    def api_error(_: Request[Any, Any, Any], exc: ApiError) -> Response[bytes]:
        return Response(
            msgspec.json.encode(exc.to_body()),
            status_code=exc.status_code,
            media_type="application/json",
            headers=exc.headers(),
        )

    app = Litestar(
        route_handlers=[chat_completions, reward, models, healthz],
        exception_handlers={ApiError: api_error},
        openapi_config=None,
        logging_config=None,  # the CLI configures logging; a library must not
    )
    app.state.stats = counters
    return app
