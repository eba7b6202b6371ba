"""What upstreams answer, as the proxy reads it: the few fields of a chat completion it
uses (everything else of a sample's message is kept as a dict and returned as is), and a
raw response kept as bytes for faithful pass-through.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["Completion", "CompletionChoice", "RawResponse", "Usage"]


class Usage(msgspec.Struct, frozen=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class CompletionChoice(msgspec.Struct, frozen=True):
    index: int = 0
    message: dict[str, Any] | None = None
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None

    @property
    def text(self) -> str:
        content = (self.message or {}).get("content")
        return content if isinstance(content, str) else ""


class Completion(msgspec.Struct, frozen=True):
    """The parts of an upstream chat completion the proxy uses."""

    choices: list[CompletionChoice]
    usage: Usage | None = None
    model: str = ""


class RawResponse(msgspec.Struct, frozen=True):
    """An upstream response kept as bytes, for faithful pass-through."""

    status: int
    headers: dict[str, str]
    body: bytes
