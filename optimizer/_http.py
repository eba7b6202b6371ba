"""The optimizer's one httpx seam: POSTing JSON with retries, errors mapped to ours.

The live sampler calls its upstream through one :class:`Poster` and its reward service
through another (a :class:`~policies.scoring.RewardTransport`): bounded concurrency,
timeouts, and retries with exponential backoff and jitter; which statuses are retried, what
error class each is and how ``retry-after`` is read is :mod:`policies.contract`, the same
as the proxy's. Above this module nothing catches httpx types.

    poster = Poster("reward", "reward service", client, headers=h, timeout=t, max_concurrency=8,
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

from policies.contract import backoff_delay, should_retry_status, status_error
from policies.errors import (
    ApiError,
    RateLimited,
    UpstreamBadResponse,
    UpstreamConnectError,
    UpstreamDisconnected,
    UpstreamTimeout,
)

__all__ = ["MAX_BACKOFF_S", "Poster"]

logger = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0


class Poster:
    """POSTs JSON with retries and backoff; httpx errors become :mod:`policies.errors`.

    Also the optimizer's :class:`~policies.scoring.RewardTransport`. The optimizer has
    no request deadline: each attempt is bounded by ``timeout``, the retries by
    ``max_retries`` (a finite ``deadline`` also stops the retries).
    """

    def __init__(
        self,
        name: str,
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
        self.name, self.what = name, what
        self._client, self._headers, self._timeout = client, headers, timeout
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._max_retries, self._sleep, self._jitter = max_retries, sleep, jitter

    def count_error(self, kind: str) -> None:
        """Nothing to count: the optimizer keeps no metrics, and the error is raised."""

    async def post_json(self, url: str, content: bytes, *, deadline: float = math.inf) -> bytes:
        """The body of a 200; else the last error, once retries are spent or pointless."""
        attempts = self._max_retries + 1
        last: ApiError | None = None
        for attempt in range(attempts):
            retryable = True
            try:
                async with self._semaphore:
                    response = await self._client.post(
                        url, content=content, headers=self._headers, timeout=self._timeout
                    )
                if response.status_code == 200:
                    return response.content
                last = status_error(
                    self.name,
                    response.status_code,
                    response.text[:200],
                    retry_after=response.headers.get("retry-after"),
                )
                if last is None:  # another 2xx: not the answer the contract asks for
                    last = UpstreamBadResponse(
                        f"{self.what}: answered {response.status_code}, not 200"
                    )
                retryable = should_retry_status(response.status_code)
            except httpx.ConnectTimeout as exc:
                last = UpstreamConnectError(f"{self.what}: connect timed out: {exc!r}")
            except httpx.TimeoutException as exc:
                last = UpstreamTimeout(f"{self.what}: timed out: {exc!r}")
            except httpx.ConnectError as exc:
                last = UpstreamConnectError(f"{self.what}: cannot connect: {exc!r}")
            except httpx.TransportError as exc:
                last = UpstreamDisconnected(f"{self.what}: broke off the response: {exc!r}")
            if not retryable or attempt == attempts - 1:
                break
            delay = backoff_delay(
                attempt + 1,
                base_s=0.5,
                cap_s=MAX_BACKOFF_S,
                rng=self._jitter,
                retry_after=last.retry_after if isinstance(last, RateLimited) else None,
            )
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
