"""The upstream client: the one place that talks httpx and maps its errors to ours.

Every call goes through the same seam: the upstream's circuit breaker, its concurrency
limit (a semaphore), the request's deadline, and bounded retries with exponential
backoff and full jitter where a retry is safe (connect errors, 429 within the deadline,
502/503/504; never once bytes of a stream have reached the client). Above this module
nothing catches httpx types. Status mapping, ``retry-after`` and backoff are
:mod:`policies.contract`'s, shared with the optimizer.

    client = UpstreamClient.from_spec(spec, http, retry=RetryConfig(), breaker=..., metrics=...)
    completion = await client.chat({"model": ..., "messages": [...], "n": 4}, deadline=t)
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import httpx
import msgspec

from policies import (
    ApiError,
    CircuitOpen,
    RateLimited,
    UpstreamBadResponse,
    UpstreamConnectError,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamSpec,
    UpstreamTimeout,
    backoff_delay,
    parse_retry_after,
    should_retry_status,
    status_error,
)
from proxy.breaker import CircuitBreaker
from proxy.config import RetryConfig
from proxy.metrics import ERROR_KINDS, ProxyMetrics, status_class
from proxy.transport import LeanTransport, Reply, request_bytes, request_prefix
from proxy.wire import Completion, RawResponse

__all__ = ["ResendBudget", "UpstreamClient", "UpstreamStream", "error_kind"]

logger = logging.getLogger(__name__)

# Headers of an upstream response a pass-through client may rely on.
_FORWARD_HEADERS = ("content-type", "retry-after", "x-request-id", "x-should-retry")
_FORWARD_PREFIXES = ("openai-", "x-ratelimit-")


_decode_completion = msgspec.json.Decoder(Completion).decode

# A whole response: httpx's, or the lean transport's (same attributes, none of the cost).
Response = httpx.Response | Reply


def _error_headers(response: Response) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in response.headers.items():
        lower = key.lower()
        if lower == "retry-after":
            # Forwarded only as a wait a client can use (never "inf" or a negative number).
            seconds = parse_retry_after(value)
            if seconds is not None:
                out[lower] = f"{math.ceil(seconds)}"
        elif lower in _FORWARD_HEADERS or lower.startswith(_FORWARD_PREFIXES):
            out[lower] = value
    return out


def _upstream_message(response: Response) -> str:
    try:
        body = msgspec.json.decode(response.content)
        message = body["error"]["message"]
        if isinstance(message, str):
            return message[:300]
    except (msgspec.DecodeError, KeyError, TypeError, IndexError):
        pass
    return response.text[:300]


def error_kind(exc: BaseException) -> str:
    """The ``kind`` label of ``iapo_upstream_errors_total`` for an error of ours."""
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, CircuitOpen):
        return "circuit_open"
    if isinstance(exc, RateLimited):
        return "rate_limited"
    if isinstance(exc, UpstreamTimeout):
        return "timeout"
    if isinstance(exc, UpstreamConnectError):
        return "connect"
    if isinstance(exc, UpstreamBadResponse):
        return "bad_response"
    return "server_error"


def _status_error(name: str, response: Response) -> ApiError:
    error = status_error(
        name,
        response.status_code,
        _upstream_message(response),
        retry_after=response.headers.get("retry-after"),
    )
    assert error is not None, "a 2xx is not an error"
    return error


def _may_pass_through(status: int) -> bool:
    """Whether a pass-through client may see the upstream's own response: 2xx, and the
    4xx/5xx that are about its request; never a redirect or the upstream refusing our key."""
    return 200 <= status < 600 and not (300 <= status < 400) and status not in (401, 403)


class ResendBudget:
    """How many times one client request may re-send a call the upstream may already have
    processed (a reset after the request was sent, a 502/504 from a gateway): each re-send
    may be billed, so they are bounded per request, not per call.

    ``budget = ResendBudget(2)``; the upstream client calls ``budget.take()`` before each.
    """

    __slots__ = ("remaining", "used")

    def __init__(self, limit: int) -> None:
        self.remaining = limit
        self.used = 0

    def take(self) -> bool:
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        self.used += 1
        return True


class UpstreamClient:
    """Calls one upstream (or reward service) through breaker, semaphore, deadline, retries."""

    def __init__(
        self,
        name: str,
        http: httpx.AsyncClient | Sequence[httpx.AsyncClient],
        *,
        url: str,
        headers: Mapping[str, str],
        timeout_s: float,
        connect_timeout_s: float,
        max_concurrency: int,
        max_retries: int,
        retry: RetryConfig,
        breaker: CircuitBreaker,
        metrics: ProxyMetrics,
        rng: random.Random | None = None,
        lean: LeanTransport | None = None,
    ) -> None:
        self.name = name
        self._lean = lean
        self._url = httpx.URL(url)
        # Shards: httpcore's pool costs O(connections x waiting requests) per event, so
        # one big pool melts down at high concurrency; several small ones stay cheap.
        self._shards = [http] if isinstance(http, httpx.AsyncClient) else list(http)
        self._load = [0] * len(self._shards)
        self.url = url
        self.headers = {
            "content-type": "application/json",
            "accept-encoding": "identity",
            **headers,
        }
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        # The lean path's request bytes up to the body length, per target URL; built
        # here for the main URL so a bad header value fails at start-up, not per call.
        self._targets: dict[str, tuple[httpx.URL, bytes]] = {}
        if lean is not None:
            self._target(url)
        connect = min(connect_timeout_s, timeout_s)
        # pool: the wait for a free connection is part of getting one, bounded alike.
        self._default_timeout = httpx.Timeout(timeout_s, connect=connect, pool=connect)
        self.max_retries = max_retries
        self.retry = retry
        self.breaker = breaker
        self.metrics = metrics
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._rng = rng or random.Random()
        label = metrics.upstream(name)
        self._duration = metrics.upstream_duration.labels(label)
        self._requests = {
            c: metrics.upstream_requests.labels(label, c) for c in ("2xx", "4xx", "5xx")
        }
        self._errors = {k: metrics.upstream_errors.labels(label, k) for k in ERROR_KINDS}
        self._resends = metrics.upstream_resends.labels(label)

    @classmethod
    def from_spec(
        cls,
        spec: UpstreamSpec,
        http: httpx.AsyncClient | Sequence[httpx.AsyncClient],
        *,
        retry: RetryConfig,
        breaker: CircuitBreaker,
        metrics: ProxyMetrics,
        rng: random.Random | None = None,
        lean: LeanTransport | None = None,
    ) -> UpstreamClient:
        key = spec.api_key()
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return cls(
            spec.name,
            http,
            url=spec.chat_url,
            headers=headers,
            timeout_s=spec.timeout_s,
            connect_timeout_s=spec.connect_timeout_s,
            max_concurrency=spec.max_concurrency,
            max_retries=spec.max_retries,
            retry=retry,
            breaker=breaker,
            metrics=metrics,
            rng=rng,
            lean=lean,
        )

    def count_error(self, kind: str) -> None:
        self._errors[kind].inc()

    # -- the seam ---------------------------------------------------------------------

    def _timeout(self, deadline: float) -> httpx.Timeout:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise UpstreamTimeout(f"the request deadline passed before calling {self.name!r}")
        if remaining >= self.timeout_s:
            return self._default_timeout
        connect = min(self.connect_timeout_s, remaining)
        return httpx.Timeout(remaining, connect=connect, pool=connect)

    def _pick(self) -> int:
        """The least loaded shard."""
        if len(self._load) == 1:
            return 0
        load = self._load
        return min(range(len(load)), key=load.__getitem__)

    async def _attempt(
        self,
        content: bytes,
        deadline: float,
        *,
        stream: bool,
        url: str | None,
        budget: ResendBudget,
    ) -> Response:
        """One call: breaker, semaphore, transport; errors of ours only (status is not checked)."""
        self.breaker.before_call()
        verdict = False
        try:
            async with self._semaphore:
                started = time.perf_counter()
                try:
                    if self._lean is not None and not stream:
                        response: Response = await self._exchange(content, deadline, url, budget)
                    else:
                        response = await self._send_httpx(content, deadline, stream, url)
                except TimeoutError:
                    # The client's deadline, not the upstream's fault: no breaker verdict.
                    raise UpstreamTimeout(
                        f"upstream {self.name!r} did not answer before the request deadline"
                    ) from None
                except httpx.HTTPError as exc:
                    verdict = True
                    self.breaker.record_failure()
                    raise self._transport_error(exc) from None
                self._duration.observe(time.perf_counter() - started)
                self._requests[status_class(response.status_code)].inc()
                verdict = True
                if response.status_code >= 500:
                    self.breaker.record_failure()
                else:
                    self.breaker.record_success()
                return response
        finally:
            if not verdict:
                self.breaker.release()

    def _transport_error(self, exc: httpx.HTTPError) -> ApiError:
        """Our error for a transport failure: nothing sent (connect), or sent and broken."""
        name = type(exc).__name__
        if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
            return UpstreamConnectError(
                f"upstream {self.name!r}: no connection within {self.connect_timeout_s:g} s"
            )
        if isinstance(exc, httpx.TimeoutException):
            return UpstreamTimeout(f"upstream {self.name!r} timed out ({name})")
        if isinstance(exc, httpx.ConnectError | httpx.UnsupportedProtocol):
            return UpstreamConnectError(f"upstream {self.name!r} unreachable: {name}")
        return UpstreamDisconnected(f"upstream {self.name!r} broke off the response: {exc or name}")

    async def _exchange(
        self, content: bytes, deadline: float, url: str | None, budget: ResendBudget
    ) -> Reply:
        """A whole call on the lean transport, bounded by the deadline and ``timeout_s``.

        Raises TimeoutError at the request's deadline and the transport's ReadTimeout when
        the upstream's own timeout comes first (only the latter is the upstream's fault).
        """
        assert self._lean is not None
        target = self._target(url or self.url)
        if deadline <= asyncio.get_running_loop().time():
            raise TimeoutError
        async with asyncio.timeout_at(deadline):
            return await self._lean.exchange(
                target[0],
                request_bytes(target[1], content),
                connect_timeout=min(self.connect_timeout_s, self.timeout_s),
                read_timeout=self.timeout_s,
                may_resend=lambda: self._resend(budget),
            )

    def _target(self, url: str) -> tuple[httpx.URL, bytes]:
        """``url`` parsed, and its request bytes up to the body length (built once)."""
        target = self._targets.get(url)
        if target is None:
            parsed = httpx.URL(url)
            target = self._targets[url] = (parsed, request_prefix("POST", parsed, self.headers))
        return target

    async def _send_httpx(
        self, content: bytes, deadline: float, stream: bool, url: str | None
    ) -> httpx.Response:
        """A call through httpx (streams, TLS upstreams, or ``upstream_transport = "httpx"``)."""
        shard = self._pick()
        self._load[shard] += 1
        try:
            # httpx's own timeouts bound each phase; this bounds the whole call by the
            # request's deadline, whatever the transport.
            async with asyncio.timeout_at(deadline):
                response = await self._send(shard, content, deadline, stream, url)
                if not stream:
                    await response.aread()
                return response
        finally:
            self._load[shard] -= 1

    async def _send(
        self, shard: int, content: bytes, deadline: float, stream: bool, url: str | None
    ) -> httpx.Response:
        timeout = self._timeout(deadline)
        if self._lean is not None:
            # Straight to our transport: httpx.AsyncClient.send adds auth, cookies,
            # redirects and hooks we do not use, about half the CPU of a call.
            request = httpx.Request(
                "POST",
                self._url if url is None else httpx.URL(url),
                content=content,
                headers=self.headers,
                extensions={"timeout": timeout.as_dict()},
            )
            response = await self._lean.handle_async_request(request)
            response.request = request
            return response
        http = self._shards[shard]
        request = http.build_request(
            "POST", url or self.url, content=content, headers=self.headers, timeout=timeout
        )
        return await http.send(request, stream=stream)

    def _backoff(self, attempt: int, error: ApiError, deadline: float) -> float | None:
        """Seconds to wait before retry ``attempt`` (1-based), or None to give up."""
        if attempt > self.max_retries:
            return None
        delay = backoff_delay(
            attempt,
            base_s=self.retry.base_delay_s,
            cap_s=self.retry.max_delay_s,
            rng=self._rng,
            retry_after=error.retry_after if isinstance(error, RateLimited) else None,
        )
        if asyncio.get_running_loop().time() + delay >= deadline:
            return None
        return delay

    def _resend(self, budget: ResendBudget) -> bool:
        """Whether a call may be sent again though the upstream may have processed it
        (the request's budget allows it); counts the re-send."""
        if not budget.take():
            return False
        self._resends.inc()
        return True

    async def _call(
        self,
        content: bytes,
        deadline: float,
        *,
        stream: bool = False,
        url: str | None = None,
        budget: ResendBudget | None = None,
    ) -> Response:
        """Call with retries; returns the last response (2xx, or a status not retried).

        Retried: no connection (nothing was sent), and 429/502/503/504 within
        ``max_retries`` and the deadline; a call that may have been processed (a broken
        response, a 502/504 from a gateway) only while ``budget`` allows a re-send.
        """
        if budget is None:
            budget = ResendBudget(self.retry.max_resends)
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._attempt(
                    content, deadline, stream=stream, url=url, budget=budget
                )
            except asyncio.CancelledError:
                self.count_error("cancelled")
                raise
            except ApiError as exc:
                self.count_error(error_kind(exc))
                retryable = isinstance(exc, UpstreamConnectError) or (
                    isinstance(exc, UpstreamDisconnected) and attempt <= self.max_retries
                )
                delay = self._backoff(attempt, exc, deadline) if retryable else None
                if delay is None or (
                    isinstance(exc, UpstreamDisconnected) and not self._resend(budget)
                ):
                    raise
                logger.info("upstream %s: %s; retry %d in %.2fs", self.name, exc, attempt, delay)
                await asyncio.sleep(delay)
                continue
            status = response.status_code
            if not should_retry_status(status):
                return response
            if stream:
                await response.aread()
            error = _status_error(self.name, response)
            self.count_error(error_kind(error))
            delay = self._backoff(attempt, error, deadline)
            if delay is None or (status in (502, 504) and not self._resend(budget)):
                return response
            await response.aclose()
            logger.info("upstream %s: %d; retry %d in %.2fs", self.name, status, attempt, delay)
            await asyncio.sleep(delay)

    # -- what the proxy calls ---------------------------------------------------------

    def _bad_response(self, message: str) -> UpstreamBadResponse:
        self.count_error("bad_response")
        return UpstreamBadResponse(f"upstream {self.name!r} {message}")

    async def chat(
        self,
        body: dict[str, Any] | bytes,
        *,
        deadline: float,
        budget: ResendBudget | None = None,
    ) -> Completion:
        """A chat completion (``body`` as a dict or already JSON-encoded); raises our
        ApiError subclasses on any failure. ``budget``: the request's re-sends."""
        content = body if isinstance(body, bytes) else msgspec.json.encode(body)
        response = await self._call(content, deadline, budget=budget)
        if not 200 <= response.status_code < 300:
            raise _status_error(self.name, response)
        try:
            completion = _decode_completion(response.content)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise self._bad_response(f"sent a malformed completion: {exc}") from None
        if not completion.choices:
            raise self._bad_response("sent no choices")
        return completion

    async def post_json(self, url: str, content: bytes, *, deadline: float) -> bytes:
        """POST a JSON body to ``url`` (a reward service) and return the 2xx body."""
        response = await self._call(content, deadline, url=url)
        if not 200 <= response.status_code < 300:
            raise _status_error(self.name, response)
        return response.content

    async def forward(self, content: bytes, *, deadline: float) -> RawResponse:
        """Pass-through: the raw request bytes in, the upstream's status and bytes out
        (a redirect or a refusal of our key is a 502 naming the upstream instead)."""
        response = await self._call(content, deadline)
        if not _may_pass_through(response.status_code):
            error = _status_error(self.name, response)
            self.count_error(error_kind(error))
            raise error
        return RawResponse(response.status_code, _error_headers(response), response.content)

    async def open_stream(self, content: bytes, *, deadline: float) -> UpstreamStream | RawResponse:
        """Pass-through streaming: an open stream on 2xx, else the raw error response."""
        response = await self._call(content, deadline, stream=True)
        assert isinstance(response, httpx.Response)  # streams always go through httpx
        if not 200 <= response.status_code < 300:
            body = await response.aread()
            await response.aclose()
            if not _may_pass_through(response.status_code):
                error = _status_error(self.name, response)
                self.count_error(error_kind(error))
                raise error
            return RawResponse(response.status_code, _error_headers(response), body)
        return UpstreamStream(self, response)


class UpstreamStream:
    """An upstream response being streamed; iterate its bytes, then ``aclose``."""

    def __init__(self, client: UpstreamClient, response: httpx.Response) -> None:
        self._client = client
        self.response = response
        self.status = response.status_code
        self.headers = _error_headers(response)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The raw bytes as they arrive; a broken stream raises UpstreamError, never ends."""
        try:
            async for chunk in self.response.aiter_raw():
                yield chunk
        except httpx.TimeoutException:
            self._client.count_error("timeout")
            raise UpstreamTimeout(f"upstream {self._client.name!r} stalled mid-stream") from None
        except httpx.HTTPError as exc:
            self._client.count_error("server_error")
            raise UpstreamError(
                f"upstream {self._client.name!r} broke off the stream: {type(exc).__name__}"
            ) from None

    async def aclose(self) -> None:
        await self.response.aclose()
