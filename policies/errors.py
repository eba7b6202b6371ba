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
        ├── RequestTooLarge         413 invalid_request_error
        ├── RateLimited             429 rate_limit_error (keeps retry-after)
        ├── UpstreamError           502 api_error, the upstream failed
        │   ├── UpstreamTimeout     504 the upstream did not answer in time
        │   └── UpstreamUnavailable 503 the upstream is down or its circuit is open
        └── InternalError           500 api_error, a bug of ours
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "ApiError",
    "AuthenticationFailed",
    "BudgetError",
    "ConfigError",
    "IapoError",
    "InternalError",
    "InvalidRequest",
    "NotFound",
    "PermissionDenied",
    "PolicyError",
    "PolicyNotFound",
    "RateLimited",
    "RequestTooLarge",
    "SamplingError",
    "StoreError",
    "UnknownTask",
    "UnknownTier",
    "UpstreamError",
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
        self.retry_after = retry_after
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


class RequestTooLarge(ApiError):
    status_code = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class RateLimited(ApiError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class UpstreamError(ApiError):
    status_code = 502
    error_type = "api_error"
    default_code = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status_code = 504
    default_code = "upstream_timeout"


class UpstreamUnavailable(UpstreamError):
    status_code = 503
    default_code = "upstream_unavailable"


class InternalError(ApiError):
    status_code = 500
    error_type = "api_error"
    default_code = "internal_error"
