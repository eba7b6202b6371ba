"""OpenAI chat-completion bodies and stream events, as an upstream sends them."""

from __future__ import annotations

import time
from typing import Any

import msgspec

__all__ = [
    "completion_body",
    "error_body",
    "message_texts",
    "reward_body",
    "sample_text",
    "stream_events",
    "token_count",
]

_encoder = msgspec.json.Encoder()


def sample_text(answer: str, pad_bytes: int = 0) -> str:
    """A sample's text: some reasoning, then an answer both boxed and last-number read.

    ``pad_bytes`` adds that much filler reasoning first (for large responses).
    """
    filler = ("so " * (pad_bytes // 3 + 1))[:pad_bytes]
    return f"{filler}Let me work through this carefully. The answer is \\boxed{{{answer}}}."


def token_count(text: str) -> int:
    """A rough token count (whitespace words), stable so tests can predict usage."""
    return max(1, len(text.split()))


def message_texts(messages: object) -> list[str]:
    """Every text in a chat ``messages`` list, whatever its content shape."""
    texts: list[str] = []
    if not isinstance(messages, list):
        return texts
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [
                part["text"]
                for part in content
                if isinstance(part, dict) and isinstance(part.get("text"), str)
            ]
    return texts


def error_body(status: int, message: str) -> bytes:
    kind = {429: "rate_limit_error", 400: "invalid_request_error", 404: "not_found_error"}
    return _encoder.encode(
        {
            "error": {
                "message": message,
                "type": kind.get(status, "api_error"),
                "param": None,
                "code": None,
            }
        }
    )


def completion_body(
    request_id: str, model: str, texts: list[str], prompt_tokens: int
) -> dict[str, Any]:
    completion_tokens = sum(token_count(t) for t in texts)
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": None,
            }
            for i, text in enumerate(texts)
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def stream_events(
    request_id: str, model: str, texts: list[str], prompt_tokens: int, include_usage: bool
) -> list[bytes]:
    """The SSE events of a streamed completion, ``data: [DONE]`` last."""
    created = int(time.time())

    def event(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": request_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
        }
        if include_usage:
            chunk["usage"] = usage
        return b"data: " + _encoder.encode(chunk) + b"\n\n"

    events: list[bytes] = []
    for i, text in enumerate(texts):
        events.append(event([{"index": i, "delta": {"role": "assistant", "content": ""}}]))
        words = text.split(" ")
        third = max(1, len(words) // 3)
        pieces = [" ".join(words[j : j + third]) for j in range(0, len(words), third)]
        for k, piece in enumerate(pieces):
            content = piece if k == 0 else " " + piece
            events.append(event([{"index": i, "delta": {"content": content}}]))
        events.append(event([{"index": i, "delta": {}, "finish_reason": "stop"}]))
    if include_usage:
        completion_tokens = sum(token_count(t) for t in texts)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        events.append(event([], usage))
    events.append(b"data: [DONE]\n\n")
    return events


def reward_body(candidates: list[str], objectives: list[str], best: str) -> dict[str, Any]:
    """An iapo reward v1 answer: every objective scores 1.0 for a candidate concluding
    ``best`` (``\\boxed{best}``), else 0.0, so tests know which candidate must win."""
    mark = f"\\boxed{{{best}}}"
    scores = [[1.0 if mark in text else 0.0 for _ in objectives] for text in candidates]
    return {"objectives": objectives, "scores": scores}
