"""A scripted OpenAI-compatible upstream (and reward service), as a plain ASGI app.

The same object serves in-process (``httpx.ASGITransport(upstream)``) and on a real
socket (``proxy.server.ServerThread(upstream)``), so unit and end-to-end tests script
upstreams the same way. It records every request it receives.

    upstream = ScriptedUpstream(answers=["so 12", "maybe 7", "12"])
    upstream.fail_next([503, 429])          # the next two calls fail, then normal service
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import msgspec

from proxy.breaker import CircuitBreaker
from proxy.config import RetryConfig
from proxy.metrics import ProxyMetrics
from proxy.upstream import UpstreamClient

__all__ = ["PASSTHROUGH_BODY", "ScriptedUpstream", "mock_client"]

# Deliberately unusual formatting: pass-through must return these exact bytes.
PASSTHROUGH_BODY = (
    b'{"id":"chatcmpl-up",  "object":"chat.completion","created":1,"model":"up-model",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"passed \\u00e9"},'
    b'"finish_reason":"stop","logprobs":null}],'
    b'"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5},"x_extra":[1,2]}'
)


class ScriptedUpstream:
    """An upstream whose sample ``i`` (counted over all calls) answers ``answers[i % len]``.

    ``supports_n``: honour ``n`` (else a call with n > 1 gets 400, as some servers do).
    ``latency_s``: delay before each answer. ``rewards``: maps a candidate text to its
    objective scores for the reward endpoint (``/reward``).
    """

    def __init__(
        self,
        answers: Sequence[str] = ("The answer is 12.",),
        *,
        supports_n: bool = True,
        latency_s: float = 0.0,
        prompt_tokens: int = 10,
        completion_tokens: int = 5,
        rewards: Callable[[str], list[float]] | None = None,
        stream_chunks: Sequence[bytes] | None = None,
        break_stream_after: int | None = None,
    ) -> None:
        self.answers = list(answers)
        self.supports_n = supports_n
        self.latency_s = latency_s
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.rewards = rewards
        self.stream_chunks = list(stream_chunks or _default_chunks())
        self.break_stream_after = break_stream_after
        self.requests: list[dict[str, Any]] = []
        self.raw_requests: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.reward_requests: list[dict[str, Any]] = []
        self.cancelled = 0
        self.completed = 0
        self._counter = itertools.count()
        self._failures: list[int | tuple[int, dict[str, str]]] = []
        self.always_fail: int | None = None

    def fail_next(self, statuses: Sequence[int | tuple[int, dict[str, str]]]) -> None:
        """The next calls answer these statuses (optionally with headers), in order."""
        self._failures.extend(statuses)

    @property
    def calls(self) -> int:
        return len(self.requests)

    def sample_ns(self) -> list[int]:
        return [int(r.get("n", 1)) for r in self.requests]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        body = await read_body(receive)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if scope["path"].endswith("/reward"):
            await self._reward(body, send)
            return
        self.raw_requests.append(body)
        self.headers.append(headers)
        request = msgspec.json.decode(body)
        self.requests.append(request)
        if self.latency_s and await _disconnected_within(receive, self.latency_s):
            self.cancelled += 1  # the caller hung up: stop generating, as vLLM does
            return
        failure = self._failures.pop(0) if self._failures else self.always_fail
        if failure is not None:
            status, extra = failure if isinstance(failure, tuple) else (failure, {})
            error = {"error": {"message": f"scripted {status}", "type": "x", "code": None}}
            await _respond(send, status, msgspec.json.encode(error), extra)
            return
        n = int(request.get("n") or 1)
        if n > 1 and not self.supports_n:
            error = {"error": {"message": "n > 1 is not supported", "type": "invalid_request"}}
            await _respond(send, 400, msgspec.json.encode(error))
            return
        if request.get("stream"):
            await self._stream(send)
            return
        if request.get("model") == "passthrough-model":
            await _respond(send, 200, PASSTHROUGH_BODY)
            return
        choices = []
        for index in range(n):
            text = self.answers[next(self._counter) % len(self.answers)]
            choices.append(
                {
                    "index": index,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            )
        payload = {
            "id": f"up-{len(self.requests)}",
            "object": "chat.completion",
            "created": 1,
            "model": request.get("model", "up-model"),
            "choices": choices,
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens * n,
                "total_tokens": self.prompt_tokens + self.completion_tokens * n,
            },
        }
        self.completed += 1
        await _respond(send, 200, msgspec.json.encode(payload))

    async def _stream(self, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for i, chunk in enumerate(self.stream_chunks):
            if self.break_stream_after is not None and i >= self.break_stream_after:
                raise RuntimeError("scripted upstream breaks the stream")
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _reward(self, body: bytes, send: Any) -> None:
        request = msgspec.json.decode(body)
        self.reward_requests.append(request)
        assert self.rewards is not None, "no rewards scripted"
        scores = [self.rewards(c) for c in request["candidates"]]
        await _respond(
            send,
            200,
            msgspec.json.encode({"objectives": request["objectives"], "scores": scores}),
        )


async def _disconnected_within(receive: Any, seconds: float) -> bool:
    """Sleep ``seconds`` unless the client disconnects first (then True)."""
    try:
        async with asyncio.timeout(seconds):
            while (await receive())["type"] != "http.disconnect":
                pass
    except TimeoutError:
        return False
    return True


async def _respond(
    send: Any, status: int, body: bytes, extra: dict[str, str] | None = None
) -> None:
    headers = [(b"content-type", b"application/json")]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _default_chunks() -> list[bytes]:
    chunks = []
    for i, word in enumerate(["Hel", "lo", " world"]):
        delta = {"role": "assistant", "content": word} if i == 0 else {"content": word}
        event = {
            "id": "chatcmpl-up",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "up-model",
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        }
        chunks.append(b"data: " + msgspec.json.encode(event) + b"\n\n")
    final = {
        "id": "chatcmpl-up",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "up-model",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    }
    chunks.append(b"data: " + msgspec.json.encode(final) + b"\n\n")
    chunks.append(b"data: [DONE]\n\n")
    return chunks


def mock_client(
    handler: Callable[[httpx.Request], httpx.Response],
    *,
    name: str = "up",
    url: str = "http://up.test/v1/chat/completions",
    max_concurrency: int = 64,
    metrics: ProxyMetrics | None = None,
) -> UpstreamClient:
    """An UpstreamClient over ``httpx.MockTransport(handler)``: no retries, a fresh breaker."""
    import random

    return UpstreamClient(
        name,
        httpx.AsyncClient(transport=httpx.MockTransport(handler)),
        url=url,
        headers={},
        timeout_s=5,
        connect_timeout_s=1,
        max_concurrency=max_concurrency,
        max_retries=0,
        retry=RetryConfig(),
        breaker=CircuitBreaker(name),
        metrics=metrics if metrics is not None else ProxyMetrics(),
        rng=random.Random(0),
    )


async def answer_lifespan(receive: Any, send: Any) -> None:
    """Acknowledge an ASGI lifespan's startup and shutdown (a scripted upstream has no state
    to set up; uvicorn, which serves it on a real socket, sends both)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        else:
            await send({"type": "lifespan.shutdown.complete"})
            return


async def read_body(receive: Any) -> bytes:
    """The whole body of an ASGI HTTP request."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body
