"""What the fault-injecting upstream does to each request: a fault plan.

A plan is either a scripted sequence (``script=("reset", "ok")``: the first chat request
gets a connection reset, the second a normal answer) or a seeded probabilistic mix, or
both (the script first, then the mix)::

    FaultPlan(latency_ms=20, error_rates={429: 0.02, 503: 0.01}, reset_prob=0.01)

A single request can also name its fault itself, which is how a test reaches one sample
through the proxy: a ``[[fault:KIND]]`` marker anywhere in the messages, or an
``x-fault: KIND`` request header. A kind not in ``FAULT_KINDS`` is an error (the
upstream answers 400 naming the valid kinds), never a silent normal answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated, Literal, get_args

import msgspec
import numpy as np

__all__ = [
    "ERROR_STATUSES",
    "FAULT_HELP",
    "FAULT_KINDS",
    "FaultKind",
    "FaultPlan",
    "UnknownFault",
    "fault_from_marker",
    "parse_fault",
    "pick_fault",
    "request_tag",
]

FaultKind = Literal[
    "ok",  # a normal answer after the base latency
    "spike",  # a normal answer after a latency spike
    "hang",  # read the request, never answer (a timeout for the client)
    "429",  # rate limited, with retry-after
    "500",
    "502",
    "503",
    "reset",  # TCP reset right after the request was read
    "malformed",  # 200 with a body that is not valid JSON (or a bad SSE event)
    "truncate",  # the body / stream is cut off and the connection closed
    "stall",  # streams: some events, then silence until the client gives up
    "302",  # a redirect without a Location
    "401",  # the upstream refuses the caller's key
    "403",
    "retry_inf",  # 429 with ``retry-after: inf``
    "usage_negative",  # a normal answer whose usage reports -10 prompt tokens
    "usage_huge",  # a normal answer whose usage reports 2**63 prompt tokens
    "extra_bytes",  # a normal answer followed by stray bytes on the kept-alive connection
]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
# The statuses ``error_rates`` may inject (each answered with an OpenAI error body).
ERROR_STATUSES: tuple[int, ...] = (302, 401, 403, 429, 500, 502, 503)
FAULT_HELP: dict[str, str] = {
    "ok": "a normal answer after the base latency",
    "spike": "a normal answer after a latency spike (--spike-ms)",
    "hang": "read the request, never answer (a timeout for the client; --hang-s bounds it)",
    "429": "rate limited, with retry-after",
    "500": "internal server error",
    "502": "bad gateway",
    "503": "service unavailable",
    "reset": "TCP reset right after the request was read",
    "malformed": "200 with a body that is not valid JSON (or a bad SSE event)",
    "truncate": "the body or stream is cut off and the connection closed",
    "stall": "streams: some events, then silence until the client gives up",
    "302": "a redirect without a Location",
    "401": "the upstream refuses the caller's key",
    "403": "the upstream forbids the caller",
    "retry_inf": "429 with retry-after: inf",
    "usage_negative": "a normal answer whose usage reports -10 prompt tokens",
    "usage_huge": "a normal answer whose usage reports 2**63 prompt tokens",
    "extra_bytes": "a normal answer followed by stray bytes on the kept-alive connection",
}


class UnknownFault(ValueError):
    """A request or a command line named a fault kind that does not exist."""


def parse_fault(name: str) -> FaultKind:
    """``name`` as a fault kind; UnknownFault names the valid kinds."""
    if name not in FAULT_KINDS:
        raise UnknownFault(f"unknown fault kind {name!r}; kinds: {', '.join(FAULT_KINDS)}")
    return name  # type: ignore[return-value]


Probability = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
_MARKER = re.compile(r"\[\[fault:([a-z0-9_]+)\]\]")
_TAG = re.compile(r"\[\[tag:([A-Za-z0-9_.:-]{1,64})\]\]")


class FaultPlan(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How the fault upstream treats chat-completion requests.

    Latencies are in milliseconds. ``error_rates`` maps an HTTP status (429, 500, 502,
    503) to its probability; the other ``*_prob`` fields are probabilities of their
    fault kind; what is left of 1 answers normally. ``ignore_n`` answers one choice
    whatever ``n`` asks; ``fewer_choices`` answers ⌈n/2⌉ choices when ``n`` > 1.
    ``answers`` (weighted by ``answer_weights``) are what samples conclude, written
    as ``The answer is \\boxed{A}.`` so a boxed or last-number extractor reads them.
    ``hang_s`` bounds how long a hang or a stall lasts when the client never gives up.
    Wire-level oddities of healthy answers: ``fragment_bytes`` writes every response in
    pieces that small; ``pad_bytes`` makes each sample that much longer (large bodies);
    ``close_delimited`` ends JSON bodies by closing the connection (no Content-Length).
    Misbehaviour a proxy must contain: ``error_rates`` may also hold 302, 401 and 403;
    ``retry_inf_prob`` (429 with ``retry-after: inf``), ``bad_usage_prob`` (usage of -10 or
    2**63 tokens, half each) and ``extra_bytes_prob`` (stray bytes after an answer).
    """

    latency_ms: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    jitter_ms: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    spike_prob: Probability = 0.0
    spike_ms: Annotated[float, msgspec.Meta(ge=0)] = 2000.0
    error_rates: dict[int, Probability] = msgspec.field(default_factory=dict)
    retry_after_s: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    hang_prob: Probability = 0.0
    reset_prob: Probability = 0.0
    malformed_prob: Probability = 0.0
    truncate_prob: Probability = 0.0
    stall_prob: Probability = 0.0
    retry_inf_prob: Probability = 0.0
    bad_usage_prob: Probability = 0.0
    extra_bytes_prob: Probability = 0.0
    hang_s: Annotated[float, msgspec.Meta(gt=0)] = 600.0
    ignore_n: bool = False
    fewer_choices: bool = False
    script: tuple[FaultKind, ...] = ()
    answers: tuple[str, ...] = ("42",)
    answer_weights: tuple[float, ...] | None = None
    chunk_delay_ms: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    fragment_bytes: Annotated[int, msgspec.Meta(ge=0)] = 0
    pad_bytes: Annotated[int, msgspec.Meta(ge=0)] = 0
    close_delimited: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.error_rates) - set(ERROR_STATUSES)
        if unknown:
            raise ValueError(
                f"error_rates: statuses must be 302/401/403/429/500/502/503, got {unknown}"
            )
        if sum(self.mix().values()) > 1.0 + 1e-9:
            raise ValueError("fault probabilities add up to more than 1")
        if not self.answers:
            raise ValueError("answers must not be empty")
        if self.answer_weights is not None and (
            len(self.answer_weights) != len(self.answers) or min(self.answer_weights) < 0
        ):
            raise ValueError("answer_weights must be one non-negative weight per answer")

    def mix(self) -> dict[str, float]:
        """Probability of each fault kind other than ``ok``."""
        mix: dict[str, float] = {str(status): p for status, p in self.error_rates.items()}
        mix.update(
            spike=self.spike_prob,
            hang=self.hang_prob,
            reset=self.reset_prob,
            malformed=self.malformed_prob,
            truncate=self.truncate_prob,
            stall=self.stall_prob,
            retry_inf=self.retry_inf_prob,
            usage_negative=self.bad_usage_prob / 2,
            usage_huge=self.bad_usage_prob / 2,
            extra_bytes=self.extra_bytes_prob,
        )
        return {kind: p for kind, p in mix.items() if p > 0}

    @classmethod
    def uniform(
        cls,
        rate: float,
        *,
        include_hangs: bool = True,
        include_bad_upstream: bool = True,
        **kwargs: object,
    ) -> FaultPlan:
        """A mix where ``rate`` of requests fail, spread evenly over the fault kinds.

        ``include_hangs=False`` leaves out hangs and stalls (which last until the client's
        deadline) for runs that must not wait on them; ``include_bad_upstream=False`` leaves
        out redirects, 401/403, ``retry-after: inf``, bad usage and stray bytes.
        """
        kinds = ["429", "500", "502", "503", "reset", "malformed", "truncate", "spike"]
        if include_hangs:
            kinds += ["hang", "stall"]
        if include_bad_upstream:
            kinds += ["302", "401", "403", "retry_inf", "bad_usage", "extra_bytes"]
        share = rate / len(kinds)
        rates = {int(k): share for k in kinds if k.isdigit()}
        probs = {f"{k}_prob": share for k in kinds if not k.isdigit()}
        return msgspec.convert({"error_rates": rates, **probs, **kwargs}, cls)


def fault_from_marker(texts: Iterable[str]) -> FaultKind | None:
    """The fault a request names with ``[[fault:KIND]]`` in its messages, if any;
    UnknownFault if it names a kind that does not exist."""
    for text in texts:
        match = _MARKER.search(text)
        if match:
            return parse_fault(match.group(1))
    return None


def request_tag(texts: Iterable[str]) -> str | None:
    """The ``[[tag:ID]]`` a client put in its messages, so upstream calls can be traced."""
    for text in texts:
        match = _TAG.search(text)
        if match:
            return match.group(1)
    return None


def pick_fault(plan: FaultPlan, rng: np.random.Generator, index: int) -> FaultKind:
    """The fault for the ``index``-th chat request (0-based) under ``plan``."""
    if index < len(plan.script):
        return plan.script[index]
    mix = plan.mix()
    if not mix:
        return "ok"
    draw = float(rng.random())
    for kind, p in mix.items():
        if draw < p:
            return kind  # type: ignore[return-value]
        draw -= p
    return "ok"
