"""The optimizer's one httpx seam: POSTing JSON with retries, errors mapped to ours.

The live sampler calls its upstream through one :class:`Poster` and its reward service
through another (a :class:`~policies.scoring.RewardTransport`): bounded concurrency,
timeouts, and retries with exponential backoff and jitter on 429, 5xx and connection
errors (a 429's ``retry-after`` is honoured). Above this module nothing catches httpx
types.

    poster = Poster("reward service", client, headers=h, timeout=t, max_concurrency=8,
                    max_retries=2, sleep=asyncio.sleep, jitter=random.Random(0))
    body = await poster.post_json(url, content)
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Awaitable, Callable, Mapping

import httpx

from policies.errors import (
    ApiError,
    AuthenticationFailed,
    InvalidRequest,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

__all__ = ["MAX_BACKOFF_S", "Poster", "map_status"]

logger = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0


def map_status(response: httpx.Response, what: str) -> ApiError:
    """Our error for a non-200 ``response`` (``what`` names the service in the message)."""
    status = response.status_code
    detail = response.text[:200]
    if status == 429:
        retry = response.headers.get("retry-after")
        try:
            after = float(retry) if retry is not None else None
        except ValueError:
            after = None
        return RateLimited(f"{what}: rate limited (429): {detail}", retry_after=after)
    if status in (401, 403):
        return AuthenticationFailed(f"{what}: {status}: {detail}", status_code=status)
    if status >= 500:
        return UpstreamError(f"{what}: {status}: {detail}")
    return InvalidRequest(f"{what}: {status}: {detail}", status_code=status)


class Poster:
    """POSTs JSON with retries and backoff; httpx errors become :mod:`policies.errors`.

    Also the optimizer's :class:`~policies.scoring.RewardTransport`. The optimizer has
    no request deadline: each attempt is bounded by ``timeout``, the retries by
    ``max_retries`` (a finite ``deadline`` also stops the retries).
    """

    def __init__(
        self,
        what: str,
        client: httpx.AsyncClient,
        *,
        headers: Mapping[str, str],
        timeout: httpx.Timeout,
        max_concurrency: int,
        max_retries: int,
        sleep: Callable[[float], Awaitable[None]],
        jitter: random.Random,
    ) -> None:
        self.what, self._client, self._headers, self._timeout = what, client, headers, timeout
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._max_retries, self._sleep, self._jitter = max_retries, sleep, jitter

    def count_error(self, kind: str) -> None:
        """Nothing to count: the optimizer keeps no metrics, and the error is raised."""

    async def post_json(self, url: str, content: bytes, *, deadline: float = math.inf) -> bytes:
        """The body of a 200; else the last error, once retries are spent or pointless."""
        attempts = self._max_retries + 1
        last: ApiError | None = None
        for attempt in range(attempts):
            try:
                async with self._semaphore:
                    response = await self._client.post(
                        url, content=content, headers=self._headers, timeout=self._timeout
                    )
                if response.status_code == 200:
                    return response.content
                last = map_status(response, self.what)
            except httpx.TimeoutException as exc:
                last = UpstreamTimeout(f"{self.what}: timed out: {exc!r}")
            except httpx.TransportError as exc:
                last = UpstreamUnavailable(f"{self.what}: cannot connect: {exc!r}")
            if not last.should_retry or attempt == attempts - 1:
                break
            delay = min(MAX_BACKOFF_S, 0.5 * 2**attempt) * (0.5 + self._jitter.random())
            if isinstance(last, RateLimited) and last.retry_after is not None:
                delay = min(MAX_BACKOFF_S, max(delay, last.retry_after))
            if asyncio.get_running_loop().time() + delay >= deadline:
                break
            logger.info(
                "%s: %s; retry %d/%d in %.1fs",
                self.what,
                last.message,
                attempt + 1,
                attempts - 1,
                delay,
            )
            await self._sleep(delay)
        assert last is not None
        # Our own error, just made: say how hard we tried before it leaves.
        last.message = f"{self.what}: gave up after {attempt + 1} attempt(s): {last.message}"
        last.args = (last.message,)
        raise last
