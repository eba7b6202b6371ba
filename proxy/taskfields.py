"""What task mode does with each field of a chat completion request.

In task mode the proxy rewrites the prompt and draws N samples, so a field is either
honoured as OpenAI defines it or refused with a 400 that names it; nothing silently
degrades. ``FIELDS`` is the table (the README's compatibility table is checked against
it); ``read_task_fields`` applies it to one request.

    fields = read_task_fields(body, view, served, strategy="majority")   # or InvalidRequest
    fields.sampling     # {"temperature": 0.7}: applied to every sample, reported in headers
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec

from policies import (
    Extractor,
    ExtractorSpec,
    InvalidRequest,
    SamplingSettings,
    Strategy,
    make_extractor,
)
from proxy.request import ChatView
from proxy.tasks import ServedTask

__all__ = ["FIELDS", "TaskFields", "read_task_fields", "tool_call_key"]

# field -> what task mode does with it. Fields not named here are forwarded unchanged
# to every sample (as pass-through does), e.g. stop, max_tokens, presence_penalty.
FIELDS: dict[str, str] = {
    "messages": "the tier's prompt is applied (system message), then sent with every sample",
    "model": "names the task (an alias) or is echoed back; the upstream gets its own model",
    "n": "only 1; n > 1 is refused (the proxy returns one aggregated answer)",
    "stream": "honoured: keep-alive comments while sampling, then the chosen answer as chunks",
    "stream_options": "include_usage honoured (usage sums every sample)",
    "temperature": "set by the policy; a different value is refused (omit it or send the policy's)",
    "top_p": "set by the policy (else the upstream's, else unset); a different value is refused",
    "seed": "honoured: sample i gets seed + i, so a request is reproducible",
    "tools": "majority vote over canonical tool calls (name and arguments); the winner's "
    "calls are returned (streamed as tool_calls deltas); refused for Best-of-N",
    "tool_choice": "forwarded to every sample (with tools)",
    "parallel_tool_calls": "forwarded to every sample (with tools)",
    "functions": "refused (deprecated); use tools",
    "function_call": "refused (deprecated); use tool_choice",
    "logprobs": "the chosen sample's logprobs are returned",
    "top_logprobs": "forwarded; the chosen sample's are returned",
    "response_format": "json_object / json_schema: answers vote as canonical JSON (the "
    "task's json extractor, else the whole document)",
    "max_tokens": "forwarded to every sample (else the upstream's max_tokens)",
    "max_completion_tokens": "forwarded to every sample",
    "stop": "forwarded to every sample",
    "audio": "refused (one aggregated text answer)",
    "modalities": "text only; audio is refused",
}

_JSON_FORMATS = ("json_object", "json_schema")
_WHOLE_DOCUMENT = make_extractor(ExtractorSpec(kind="json"))


class TaskFields(msgspec.Struct, frozen=True):
    """A task request's fields as task mode reads them.

    ``sampling``: the temperature (and top_p) every sample is drawn with. ``tools``: a
    sample that calls tools votes with its canonical calls (read after sampling, so the
    vote cannot end early). ``extractor``: how a text answer is read for the vote.
    """

    sampling: dict[str, float]
    tools: bool
    extractor: Extractor


def _refuse(field: str, message: str) -> InvalidRequest:
    return InvalidRequest(
        f"{message} (in task mode the proxy samples N answers and returns one; see the "
        f"README's compatibility table)",
        param=field,
        code="unsupported_in_task_mode",
    )


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=0.0, abs_tol=1e-9)


def read_task_fields(
    body: dict[str, Any], view: ChatView, served: ServedTask, strategy: Strategy
) -> TaskFields:
    """Check a task request against ``FIELDS``; InvalidRequest names the refused field."""
    if view.n != 1:
        raise _refuse("n", f"n={view.n} is not supported for task {served.name!r}; send n=1")
    for field, instead in (("functions", "tools"), ("function_call", "tool_choice")):
        if body.get(field) is not None:
            raise _refuse(field, f"{field!r} is deprecated and not supported; use {instead!r}")
    modalities = body.get("modalities")
    if body.get("audio") is not None or (isinstance(modalities, list) and "audio" in modalities):
        field = "audio" if body.get("audio") is not None else "modalities"
        raise _refuse(field, "audio output is not supported")

    # The policy's settings (what its arms were evaluated with), else the upstream's.
    settings = served.policy.sampling or SamplingSettings.of(served.upstream)
    temperature, top_p = settings.temperature, settings.top_p
    if view.temperature is not None and not _same(view.temperature, temperature):
        raise _refuse(
            "temperature",
            f"temperature {view.temperature:g} differs from the policy's {temperature:g} "
            f"(part of the evaluated arm); omit temperature or send {temperature:g}",
        )
    client_top_p = body.get("top_p")
    if client_top_p is not None:
        if isinstance(client_top_p, bool) or not isinstance(client_top_p, int | float):
            raise InvalidRequest("top_p must be a number", param="top_p", code="invalid_body")
        if not _same(float(client_top_p), 1.0 if top_p is None else top_p):
            raise _refuse(
                "top_p",
                f"top_p {client_top_p:g} differs from the policy's {top_p or 1.0:g}; "
                f"omit top_p or send {top_p or 1.0:g}",
            )
    sampling = {"temperature": temperature}
    if top_p is not None:
        sampling["top_p"] = top_p

    tools = bool(body.get("tools"))
    if tools and strategy != "majority":
        raise _refuse(
            "tools",
            f"task {served.name!r} ranks answers by a reward service (Best-of-N), which "
            f"scores text, not tool calls",
        )
    extractor = served.extractor
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in _JSON_FORMATS:
        spec = served.config.extractor or served.policy.extractor
        if spec is None or spec.kind != "json":
            extractor = _WHOLE_DOCUMENT
    return TaskFields(sampling=sampling, tools=tools, extractor=extractor)


def tool_call_key(message: dict[str, Any]) -> str | None:
    """A canonical form of a message's tool calls (names, arguments as sorted JSON), so
    equivalent calls vote together; None if the message makes no tool call."""
    calls = message.get("tool_calls")
    if not isinstance(calls, list) or not calls:
        return None
    canonical = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            return None
        arguments = function.get("arguments")
        try:
            parsed: Any = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError:
            parsed = str(arguments).strip()
        canonical.append([function.get("name"), parsed])
    return "tools:" + json.dumps(canonical, sort_keys=True, separators=(",", ":"))
