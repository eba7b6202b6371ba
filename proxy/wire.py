"""What upstreams answer, as the proxy reads it: the few fields of a chat completion it
uses (everything else of a sample's message is kept as a dict and returned as is), and a
raw response kept as bytes for faithful pass-through.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

__all__ = ["MAX_TOKENS", "Completion", "CompletionChoice", "RawResponse", "Usage"]

# The most tokens one upstream call may report. Usage is validated where it enters: a
# negative or absurd count is a bad upstream response, never a counter that goes
# backwards or an integer SQLite cannot store (128 samples of this still fit in 63 bits).
MAX_TOKENS = 1 << 40
TokenCount = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS)]


class Usage(msgspec.Struct, frozen=True):
    prompt_tokens: TokenCount = 0
    completion_tokens: TokenCount = 0


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
