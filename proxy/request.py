"""Reading a chat completion request: its body and the iapo headers, with 4xx that teach.

The body is decoded twice with msgspec: to a dict, so every OpenAI field we do not
model is forwarded unchanged, and through a typed view of the fields we use, so a
wrong type anywhere we rely on is a 400 naming the field (``$.n``, ``$.messages[0].role``).
Pass-through requests only go through a cheaper view (model, stream, messages is a list).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec

from policies import InvalidRequest

__all__ = [
    "ChatView",
    "IapoHeaders",
    "PassthroughView",
    "decode_chat",
    "decode_passthrough",
    "read_headers",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DIGITS = re.compile(r"[0-9]+")
# A deadline header above this (about 11.6 days) means "no lower than the server's".
MAX_DEADLINE_MS = 10**9

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class MessageView(msgspec.Struct, frozen=True):
    role: Role
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(msgspec.Struct, frozen=True):
    include_usage: bool = False


class ChatView(msgspec.Struct, frozen=True):
    """The fields of a chat completion request the proxy acts on (others are forwarded)."""

    messages: Annotated[list[MessageView], msgspec.Meta(min_length=1)]
    model: str | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=128)] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class PassthroughView(msgspec.Struct, frozen=True):
    """Enough of a request to route it; the bytes go upstream untouched."""

    model: str | None = None
    stream: bool = False
    messages: list[msgspec.Raw] | None = None


class IapoHeaders(msgspec.Struct, frozen=True):
    task: str | None
    tier: str | None
    deadline_s: float | None


_chat_decoder = msgspec.json.Decoder(ChatView)
_dict_decoder = msgspec.json.Decoder(dict[str, Any])
_passthrough_decoder = msgspec.json.Decoder(PassthroughView)


# What msgspec raises for bodies it cannot read: not JSON, wrong types, bytes that are
# not UTF-8 inside strings, nesting deeper than its recursion limit.
_DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError)


def _invalid(exc: Exception) -> InvalidRequest:
    if isinstance(exc, UnicodeDecodeError):
        return InvalidRequest(
            "request body is not valid UTF-8 JSON; encode strings as UTF-8", code="invalid_body"
        )
    if isinstance(exc, RecursionError):
        return InvalidRequest("request body is nested too deeply", code="invalid_body")
    text = str(exc)
    param = None
    if " - at `" in text:
        param = text.rsplit(" - at `", 1)[1].rstrip("`")
    if isinstance(exc, msgspec.ValidationError):
        message = f"invalid request body: {text}"
    else:
        message = f"request body is not valid JSON: {text}"
    return InvalidRequest(message, param=param, code="invalid_body")


def decode_passthrough(body: bytes) -> PassthroughView:
    """The routing view of a body; InvalidRequest if it is not a JSON chat request."""
    try:
        return _passthrough_decoder.decode(body)
    except _DECODE_ERRORS as exc:
        raise _invalid(exc) from None


def decode_chat(body: bytes) -> tuple[ChatView, dict[str, Any]]:
    """The typed view and the full dict of a task request."""
    try:
        return _chat_decoder.decode(body), _dict_decoder.decode(body)
    except _DECODE_ERRORS as exc:
        raise _invalid(exc) from None


def _name_header(value: str | None, header: str) -> str | None:
    if value is None:
        return None
    if not _NAME.match(value):
        raise InvalidRequest(
            f"header {header} must be a task or tier name (letters, digits, '_.-', at most "
            f"64 characters)",
            param=header,
            code="invalid_header",
        )
    return value


def read_headers(task: str | None, tier: str | None, deadline_ms: str | None) -> IapoHeaders:
    """Validate ``X-IAPO-Task``, ``X-IAPO-Tier`` and ``X-IAPO-Deadline-Ms``."""
    deadline_s: float | None = None
    if deadline_ms is not None:
        value = deadline_ms.strip()
        if not _DIGITS.fullmatch(value) or not value.strip("0"):
            raise InvalidRequest(
                "header X-IAPO-Deadline-Ms must be a positive integer (milliseconds)",
                param="X-IAPO-Deadline-Ms",
                code="invalid_header",
            )
        # It may only lower the server's deadline: any number of digits is a valid
        # "later than that", so the value is capped before it becomes a float.
        digits = value.lstrip("0")
        deadline_s = MAX_DEADLINE_MS / 1000.0
        if len(digits) <= len(str(MAX_DEADLINE_MS)):
            deadline_s = min(int(digits), MAX_DEADLINE_MS) / 1000.0
    return IapoHeaders(
        _name_header(task, "X-IAPO-Task"), _name_header(tier, "X-IAPO-Tier"), deadline_s
    )
