"""The upstream contract both halves share: what a status means, when to retry, how long.

The optimizer's live sampler and the proxy's upstream client call the same
OpenAI-compatible servers; they map a status to the same error class (see the tree in
:mod:`policies.errors`), read ``retry-after`` the same way and back off the same way.
Pure functions, no I/O:

    error = status_error("vllm", 429, "slow down", retry_after="2")   # RateLimited
    if should_retry_status(429):
        delay = backoff_delay(attempt, base_s=0.1, cap_s=5, retry_after=error.retry_after,
                              rng=random.Random(0))

``retry-after`` is validated where it enters: a number of seconds or an HTTP date, never
negative, infinite or NaN, and capped at :data:`MAX_RETRY_AFTER_S`.
"""

from __future__ import annotations

import email.utils
import math
import random
import time

from policies.errors import (
    ApiError,
    RateLimited,
    UpstreamAuthFailed,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)

__all__ = [
    "MAX_RETRY_AFTER_S",
    "RETRY_STATUSES",
    "backoff_delay",
    "parse_retry_after",
    "should_retry_status",
    "status_error",
]

# Statuses worth calling again: the upstream is busy (429, 503) or a gateway in front of
# it failed (502, 504). A 500 is the upstream's own bug: the same request fails again.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# The longest wait an upstream may ask for: an hour. More is a misconfiguration, not advice.
MAX_RETRY_AFTER_S = 3600.0


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``retry-after`` value, or None if absent or unreadable.

    Accepts delay-seconds (``"2"``, ``"0.5"``) and an HTTP date; the result is finite,
    between 0 and :data:`MAX_RETRY_AFTER_S`.
    """
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > 64:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None  # "inf", "1e999", "nan": not a wait anyone meant
    return min(MAX_RETRY_AFTER_S, max(0.0, seconds))


def should_retry_status(status: int) -> bool:
    """Whether an answer with this status is worth sending again (within the deadline)."""
    return status in RETRY_STATUSES


def status_error(
    upstream: str, status: int, detail: str, *, retry_after: str | None = None
) -> ApiError | None:
    """The error an upstream's non-2xx ``status`` stands for (None for 2xx).

    ``detail`` is the upstream's error message (or the start of its body); the message
    names the upstream. A redirect or an unknown status is a bad response (502); a
    401/403 means the upstream refused *our* key (502, the client's key is fine); other
    4xx are the upstream refusing the request itself and keep their status.
    """
    if 200 <= status < 300:
        return None
    message = f"upstream {upstream!r} answered {status}: {detail}"
    if status == 429:
        return RateLimited(message, retry_after=parse_retry_after(retry_after))
    if status in (401, 403):
        return UpstreamAuthFailed(
            f"upstream {upstream!r} refused the proxy's credentials ({status}); check its "
            f"api_key_env: {detail}"
        )
    if 400 <= status < 500:
        return UpstreamRejected(message, status_code=status)
    if status == 503:
        return UpstreamUnavailable(message, retry_after=parse_retry_after(retry_after))
    if status == 504:
        return UpstreamTimeout(message)
    if 500 <= status < 600:
        return UpstreamError(message)
    kind = "a redirect" if 300 <= status < 400 else "an unexpected status"
    return UpstreamBadResponse(f"upstream {upstream!r} answered {kind} ({status}): {detail}")


def backoff_delay(
    attempt: int,
    *,
    base_s: float,
    cap_s: float,
    rng: random.Random,
    retry_after: float | None = None,
) -> float:
    """Seconds before retry ``attempt`` (1-based): the upstream's ``retry-after`` if it
    gave one, else exponential backoff with full jitter, ``uniform(0, min(cap, base·2^(a-1)))``.
    """
    if retry_after is not None and math.isfinite(retry_after):
        return min(MAX_RETRY_AFTER_S, max(0.0, retry_after))
    ceiling = min(cap_s, base_s * 2.0 ** min(attempt - 1, 60))
    return rng.uniform(0.0, ceiling)
