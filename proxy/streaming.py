"""Server-sent events in the OpenAI chunk format.

A task's answer is only known once its samples are aggregated, so the stream first
sends SSE comments (``: keep-alive``) every few seconds, which clients and load
balancers count as traffic, then the chosen answer as ``chat.completion.chunk``
events, the usage chunk if ``stream_options.include_usage`` asked for it, the
summary (an SSE comment, and a JSON chunk if ``X-IAPO-Stream-Summary: chunk`` asked for
it) and ``data: [DONE]``. A failure ends the stream with an error event and no ``[DONE]``,
so a client never mistakes a broken stream for a complete answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec

from policies import ApiError
from proxy.sampling import Sample

__all__ = ["DONE", "KEEPALIVE", "answer_events", "error_event", "keepalive_then"]

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"
_encode = msgspec.json.encode


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + _encode(payload) + b"\n\n"


def error_event(error: ApiError) -> bytes:
    """The last event of a failed stream: the OpenAI error body."""
    return _event(error.to_body())


def _delta_chunks(message: dict[str, Any], logprobs: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The deltas after the role chunk: content (with the sample's logprobs), refusal, and
    the tool calls whole, each with its index, as OpenAI streams them."""
    deltas: list[dict[str, Any]] = []
    content = message.get("content")
    if isinstance(content, str) and content:
        deltas.append({"delta": {"content": content}, "logprobs": logprobs})
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        deltas.append({"delta": {"refusal": refusal}, "logprobs": None})
    calls = message.get("tool_calls")
    if isinstance(calls, list) and calls:
        tool_calls = [
            {"index": i, **{k: v for k, v in call.items() if k != "index"}}
            for i, call in enumerate(calls)
            if isinstance(call, dict)
        ]
        deltas.append({"delta": {"tool_calls": tool_calls}, "logprobs": None})
    return deltas


def answer_events(
    *,
    completion_id: str,
    created: int,
    model: str,
    choices: Sequence[Sample],
    usage: dict[str, int] | None,
    summary: dict[str, str] | None = None,
    summary_chunk: bool = False,
) -> list[bytes]:
    """The chunks of a finished answer: role, deltas, finish reason per choice, usage, DONE.

    ``usage`` None unless the client asked for it (then a final chunk with empty
    ``choices`` carries it). ``summary`` (what non-streaming clients read in the
    ``x-iapo-*`` headers: samples, cost, agreement, ...) is sent as one SSE comment
    ``: iapo samples=4/4 cost=0.002 ...`` before ``[DONE]``, and with ``summary_chunk``
    also as a last JSON chunk with empty ``choices`` and an ``iapo`` object.
    """
    base = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
    }
    events: list[bytes] = []
    for index, sample in enumerate(choices):
        role: dict[str, Any] = {"delta": {"role": "assistant", "content": ""}, "logprobs": None}
        finish: dict[str, Any] = {
            "delta": {},
            "logprobs": None,
            "finish_reason": sample.finish_reason or "stop",
        }
        for part in [role, *_delta_chunks(sample.message, sample.logprobs), finish]:
            choice = {"index": index, **part}
            choice.setdefault("finish_reason", None)
            events.append(_event({**base, "choices": [choice]}))
    if usage is not None:
        events.append(_event({**base, "choices": [], "usage": usage}))
    if summary:
        fields = " ".join(f"{key}={value}" for key, value in summary.items())
        events.append(f": iapo {fields}\n\n".encode())
        if summary_chunk:
            events.append(_event({**base, "choices": [], "iapo": summary}))
    events.append(DONE)
    return events


async def keepalive_then(
    task: asyncio.Task[list[bytes]], interval_s: float, watcher: asyncio.Future[None] | None = None
) -> AsyncIterator[bytes]:
    """Yield keep-alive comments while ``task`` runs, then its events (or an error event).

    Closing the iterator cancels ``task``; ``watcher`` (the disconnect watcher, which
    cancels ``task`` when the client leaves) is cancelled once the stream is over.
    """
    try:
        while True:
            done, _ = await asyncio.wait((task,), timeout=interval_s)
            if done:
                break
            yield KEEPALIVE
        error = task.exception()
        if error is None:
            for event in task.result():
                yield event
        elif isinstance(error, ApiError):
            yield error_event(error)
        else:
            raise error
    finally:
        if watcher is not None:
            watcher.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait((task,))
