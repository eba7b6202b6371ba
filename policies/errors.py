"""The one error tree of iapo.

Every error the project raises on purpose derives from :class:`IapoError`. Errors
that can reach an HTTP client derive from :class:`ApiError`: they know their HTTP
status, their OpenAI error ``type`` and ``code``, whether a client should retry, and
serialise to the body the ``openai`` SDK parses.

    IapoError
    ├── ConfigError             bad config, task or tier settings (start-up, CLI)
    ├── PolicyError             a policy file or stored policy is malformed
    │   └── PolicyNotFound      no policy for that task / revision
    ├── StoreError              a database could not be opened or migrated
    ├── BudgetError             a run would spend more samples than it was given
    ├── SamplingError           the optimizer could not obtain a sample
    └── ApiError                reaches an HTTP client in the OpenAI error shape
        ├── InvalidRequest          400 invalid_request_error
        │   ├── UnknownTask         400 code=unknown_task (names the valid tasks)
        │   └── UnknownTier         400 code=unknown_tier (names the valid tiers)
        ├── AuthenticationFailed    401 authentication_error
        ├── PermissionDenied        403 permission_error
        ├── NotFound                404 not_found_error
        ├── RequestTimeout          408 the request head did not arrive in time
        ├── RequestTooLarge         413 invalid_request_error
        ├── HeadersTooLarge         431 invalid_request_error
        ├── RateLimited             429 rate_limit_error (keeps retry-after)
        ├── ClientGone              499 the client went away first (only ever logged)
        ├── UpstreamRejected        4xx the upstream refused the request itself (its status)
        ├── UpstreamError           502 api_error, the upstream failed
        │   ├── UpstreamBadResponse     502 an answer we cannot use: malformed body,
        │   │                           out-of-range usage, a 1xx/3xx or unknown status
        │   ├── UpstreamAuthFailed      502 the upstream refused the proxy's own key (401/403)
        │   ├── UpstreamDisconnected    502 the connection broke after the request was sent
        │   ├── UpstreamTimeout         504 the upstream did not answer in time
        │   └── UpstreamUnavailable     503 the upstream is down, busy or not reached
        │       ├── UpstreamConnectError    503 no connection (nothing was sent)
        │       ├── CircuitOpen             503 failing fast: its circuit breaker is open
        │       └── ShuttingDown            503 stopped at the server's drain bound
        └── InternalError           500 api_error, a bug of ours

Code tells errors apart by type (``isinstance``), never by ``code``: the code is what a
client reads. :mod:`policies.contract` maps an upstream's status to these classes.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

__all__ = [
    "ApiError",
    "AuthenticationFailed",
    "BudgetError",
    "CircuitOpen",
    "ClientGone",
    "ConfigError",
    "HeadersTooLarge",
    "IapoError",
    "InternalError",
    "InvalidRequest",
    "NotFound",
    "PermissionDenied",
    "PolicyError",
    "PolicyNotFound",
    "RateLimited",
    "RequestTimeout",
    "RequestTooLarge",
    "SamplingError",
    "ShuttingDown",
    "StoreError",
    "UnknownTask",
    "UnknownTier",
    "UpstreamAuthFailed",
    "UpstreamBadResponse",
    "UpstreamConnectError",
    "UpstreamDisconnected",
    "UpstreamError",
    "UpstreamRejected",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]


class IapoError(Exception):
    """Base of every error iapo raises on purpose."""


class ConfigError(IapoError):
    """A config, task or tier file is wrong; the message says what to change."""


class PolicyError(IapoError):
    """A policy artifact is malformed; the message names the bad field."""


class PolicyNotFound(PolicyError):
    """No policy is stored for that task (or that revision)."""


class StoreError(IapoError):
    """A database could not be opened, read or migrated."""


class BudgetError(IapoError):
    """A run would spend more samples than its budget."""


class SamplingError(IapoError):
    """The optimizer could not obtain a sample (after its retries)."""


class ApiError(IapoError):
    """An error that reaches an HTTP client, in the OpenAI error shape.

    ``raise UnknownTier("unknown tier 'gold'; valid tiers: economy, premium", param="X-IAPO-Tier")``
    """

    status_code: ClassVar[int] = 400
    error_type: ClassVar[str] = "invalid_request_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        # NaN, infinity or a negative wait would break the retry-after header: none at all.
        finite = retry_after is not None and math.isfinite(retry_after) and retry_after >= 0
        self.retry_after = retry_after if finite else None
        if status_code is not None:
            self.status_code = status_code  # type: ignore[misc]

    @property
    def should_retry(self) -> bool:
        """Whether a client may retry the same request (the ``x-should-retry`` header)."""
        return self.status_code in (408, 409, 429) or self.status_code >= 500

    def to_body(self) -> dict[str, Any]:
        """The OpenAI error body: ``{"error": {"message", "type", "param", "code"}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def headers(self) -> dict[str, str]:
        """Response headers that go with this error."""
        headers = {"x-should-retry": "true" if self.should_retry else "false"}
        if self.retry_after is not None:
            headers["retry-after"] = f"{max(0, round(self.retry_after))}"
        return headers


class InvalidRequest(ApiError):
    status_code = 400
    error_type = "invalid_request_error"


class UnknownTask(InvalidRequest):
    default_code = "unknown_task"


class UnknownTier(InvalidRequest):
    default_code = "unknown_tier"


class AuthenticationFailed(ApiError):
    status_code = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDenied(ApiError):
    status_code = 403
    error_type = "permission_error"


class NotFound(ApiError):
    status_code = 404
    error_type = "not_found_error"


class RequestTimeout(ApiError):
    status_code = 408
    error_type = "invalid_request_error"
    default_code = "request_timeout"


class HeadersTooLarge(ApiError):
    status_code = 431
    error_type = "invalid_request_error"
    default_code = "headers_too_large"


class RequestTooLarge(ApiError):
    status_code = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class RateLimited(ApiError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class ClientGone(ApiError):
    """The client disconnected before its answer was ready (logged as 499, never sent)."""

    status_code = 499
    default_code = "client_closed"


class UpstreamRejected(ApiError):
    """The upstream refused the request itself (context too long, bad parameter): the
    client sees the upstream's 4xx status and message, not a 5xx."""

    default_code = "upstream_rejected"


class UpstreamError(ApiError):
    status_code = 502
    error_type = "api_error"
    default_code = "upstream_error"


class UpstreamBadResponse(UpstreamError):
    """The upstream answered something we cannot use: a malformed or out-of-range body,
    broken framing, a redirect or a status outside 2xx/4xx/5xx."""

    default_code = "bad_response"


class UpstreamAuthFailed(UpstreamError):
    """The upstream refused the proxy's credentials (401/403): a 502, because the
    client's own key is not at fault."""

    default_code = "upstream_auth"


class UpstreamDisconnected(UpstreamError):
    """The connection broke after the request was sent: the upstream may have processed
    (and billed) it, so re-sending it is bounded by a retry budget."""

    default_code = "upstream_disconnected"


class UpstreamTimeout(UpstreamError):
    status_code = 504
    default_code = "upstream_timeout"


class UpstreamUnavailable(UpstreamError):
    status_code = 503
    default_code = "upstream_unavailable"


class UpstreamConnectError(UpstreamUnavailable):
    """No connection to the upstream (refused, unreachable, connect timeout): nothing was
    sent, so a retry is always safe."""

    default_code = "upstream_connect"


class CircuitOpen(UpstreamUnavailable):
    """The upstream's circuit is open: failing fast without calling it."""

    default_code = "circuit_open"


class ShuttingDown(UpstreamUnavailable):
    """The server stopped this request at its drain bound; another replica can serve it."""

    default_code = "shutting_down"


class InternalError(ApiError):
    status_code = 500
    error_type = "api_error"
    default_code = "internal_error"
