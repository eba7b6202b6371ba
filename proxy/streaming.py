"""Server-sent events in the OpenAI chunk format.

A task's answer is only known once its samples are aggregated, so the stream first
sends SSE comments (``: keep-alive``) every few seconds, which clients and load
balancers count as traffic, then the chosen answer as ``chat.completion.chunk``
events, the usage chunk if ``stream_options.include_usage`` asked for it, and
``data: [DONE]``. A failure ends the stream with an error event and no ``[DONE]``,
so a client never mistakes a broken stream for a complete answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec

from policies import ApiError

__all__ = ["DONE", "KEEPALIVE", "answer_events", "error_event", "keepalive_then"]

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"
_encode = msgspec.json.encode


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + _encode(payload) + b"\n\n"


def error_event(error: ApiError) -> bytes:
    """The last event of a failed stream: the OpenAI error body."""
    return _event(error.to_body())


def answer_events(
    *,
    completion_id: str,
    created: int,
    model: str,
    choices: Sequence[tuple[str, str | None]],
    usage: dict[str, int] | None,
    summary: dict[str, str] | None = None,
) -> list[bytes]:
    """The chunks of a finished answer: role, content, finish reason per choice, usage, DONE.

    ``choices``: (text, finish_reason) per returned choice; ``usage`` None unless the
    client asked for it (then a final chunk with empty ``choices`` carries it);
    ``summary`` (samples, cost, agreement) becomes one SSE comment before ``[DONE]``.
    """
    base = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
    }
    events: list[bytes] = []
    for index, (text, finish) in enumerate(choices):
        events.append(
            _event(
                {
                    **base,
                    "choices": [
                        {
                            "index": index,
                            "delta": {"role": "assistant", "content": ""},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ],
                }
            )
        )
        if text:
            events.append(
                _event(
                    {
                        **base,
                        "choices": [
                            {
                                "index": index,
                                "delta": {"content": text},
                                "logprobs": None,
                                "finish_reason": None,
                            }
                        ],
                    }
                )
            )
        events.append(
            _event(
                {
                    **base,
                    "choices": [
                        {
                            "index": index,
                            "delta": {},
                            "logprobs": None,
                            "finish_reason": finish or "stop",
                        }
                    ],
                }
            )
        )
    if usage is not None:
        events.append(_event({**base, "choices": [], "usage": usage}))
    if summary:
        # What non-streaming clients read in x-iapo-* headers, sent once it is known.
        fields = " ".join(f"{key}={value}" for key, value in summary.items())
        events.append(f": iapo {fields}\n\n".encode())
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
