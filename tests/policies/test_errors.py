from __future__ import annotations

import pytest

from policies import errors
from policies.errors import (
    ApiError,
    AuthenticationFailed,
    IapoError,
    InvalidRequest,
    RateLimited,
    UnknownTier,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)


def test_every_error_derives_from_the_base() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, IapoError), name


@pytest.mark.parametrize(
    ("error", "status", "error_type", "retry"),
    [
        (
            UnknownTier("unknown tier 'gold'; valid tiers: economy, premium", param="X-IAPO-Tier"),
            400,
            "invalid_request_error",
            False,
        ),
        (AuthenticationFailed("missing bearer key"), 401, "authentication_error", False),
        (RateLimited("slow down", retry_after=2.4), 429, "rate_limit_error", True),
        (UpstreamError("upstream said 500"), 502, "api_error", True),
        (UpstreamUnavailable("circuit open"), 503, "api_error", True),
        (UpstreamTimeout("no answer in 30 s"), 504, "api_error", True),
    ],
)
def test_api_errors_know_their_http_shape(
    error: ApiError, status: int, error_type: str, retry: bool
) -> None:
    assert error.status_code == status
    body = error.to_body()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == error_type
    assert body["error"]["message"] == str(error)
    assert error.headers()["x-should-retry"] == ("true" if retry else "false")


def test_codes_params_and_retry_after() -> None:
    tier = UnknownTier("bad tier", param="X-IAPO-Tier")
    assert tier.to_body()["error"]["code"] == "unknown_tier"
    assert tier.to_body()["error"]["param"] == "X-IAPO-Tier"
    assert RateLimited("x", retry_after=2.4).headers()["retry-after"] == "2"
    assert "retry-after" not in RateLimited("x").headers()
    overridden = InvalidRequest("x", code="bad_json", status_code=422)
    assert (overridden.status_code, overridden.code) == (422, "bad_json")
    assert InvalidRequest("y").status_code == 400, "an override does not leak to the class"
