"""The upstream contract (policies.contract), and that both halves apply it alike: the
optimizer's live sampler and the proxy's upstream client raise the same error class for
the same upstream answer and retry the same statuses."""

from __future__ import annotations

import inspect
import random
import time
from email.utils import formatdate

import httpx
import pytest

from optimizer import HttpSampler
from policies import errors
from policies.contract import (
    MAX_RETRY_AFTER_S,
    backoff_delay,
    parse_retry_after,
    should_retry_status,
    status_error,
)
from policies.errors import (
    ApiError,
    RateLimited,
    SamplingError,
    UpstreamAuthFailed,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from tests.optimizer.test_live import ROWS, TASK, upstream
from tests.proxy.scripted import mock_client


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("2", 2.0),
        (" 0.5 ", 0.5),
        ("0", 0.0),
        ("-5", 0.0),
        ("1e9", MAX_RETRY_AFTER_S),
        ("inf", None),
        ("1e999", None),
        ("-inf", None),
        ("nan", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("9" * 400, None),
    ],
)
def test_retry_after_is_a_finite_bounded_wait(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


def test_retry_after_reads_http_dates() -> None:
    now = time.time()
    later = parse_retry_after(formatdate(now + 30, usegmt=True), now=now)
    assert later is not None
    assert 28 <= later <= 31
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0


@pytest.mark.parametrize(
    ("status", "cls", "http"),
    [
        (200, None, None),
        (204, None, None),
        (101, UpstreamBadResponse, 502),
        (302, UpstreamBadResponse, 502),
        (400, UpstreamRejected, 400),
        (401, UpstreamAuthFailed, 502),
        (403, UpstreamAuthFailed, 502),
        (404, UpstreamRejected, 404),
        (429, RateLimited, 429),
        (500, UpstreamError, 502),
        (502, UpstreamError, 502),
        (503, UpstreamUnavailable, 503),
        (504, UpstreamTimeout, 504),
        (600, UpstreamBadResponse, 502),
    ],
)
def test_status_maps_to_one_error_class(status: int, cls: type | None, http: int | None) -> None:
    error = status_error("vllm", status, "detail", retry_after="3")
    if cls is None:
        assert error is None
        return
    assert type(error) is cls
    assert error is not None
    assert error.status_code == http
    assert "'vllm'" in error.message
    assert error.retry_after == (3.0 if cls in (RateLimited, UpstreamUnavailable) else None)


def test_retried_statuses() -> None:
    assert [s for s in range(100, 600) if should_retry_status(s)] == [429, 502, 503, 504]


def test_backoff_is_full_jitter_under_a_cap_unless_the_upstream_said() -> None:
    rng = random.Random(0)
    delays = [backoff_delay(a, base_s=0.1, cap_s=1.0, rng=rng) for a in range(1, 40)]
    assert all(0 <= d <= min(1.0, 0.1 * 2 ** (a - 1)) for a, d in enumerate(delays, 1))
    assert backoff_delay(3, base_s=0.1, cap_s=1.0, rng=rng, retry_after=7.0) == 7.0
    assert backoff_delay(3, base_s=0.1, cap_s=1.0, rng=rng, retry_after=1e12) == MAX_RETRY_AFTER_S


def test_every_error_class_is_in_the_documented_tree() -> None:
    doc = inspect.getdoc(errors) or ""
    for name in errors.__all__:
        assert name in doc, f"{name} is missing from the tree in policies/errors.py"
        cls = getattr(errors, name)
        assert issubclass(cls, errors.IapoError), name


@pytest.mark.parametrize("status", [302, 401, 403, 404, 429, 500, 502, 503, 504])
async def test_both_halves_raise_the_same_class_and_retry_alike(status: int) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(status, json={"error": {"message": "no"}})

    # the proxy's upstream client
    calls: list[httpx.Request] = []
    client = mock_client(answer)
    client.max_retries = 2
    deadline = 1e12
    with pytest.raises(ApiError) as proxy_error:
        await client.chat({"model": "m", "messages": []}, deadline=deadline)
    proxy_calls = len(calls)

    # the optimizer's live sampler
    calls = []
    spec = upstream(max_retries=2)

    async def no_sleep(_: float) -> None:
        return None

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        sampler = HttpSampler(TASK, spec, ROWS, client=http, run_key="k", sleep=no_sleep)
        with pytest.raises(SamplingError) as sampler_error:
            await sampler.sample(0, 0, 1)
    assert type(sampler_error.value.__cause__) is type(proxy_error.value)
    assert len(calls) == proxy_calls == (3 if should_retry_status(status) else 1)
