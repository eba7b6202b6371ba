"""The live sampler: samples from an OpenAI-compatible upstream over httpx.

Bounded concurrency (the upstream's ``max_concurrency``), a per-sample ``seed`` so
repeated samples differ, timeouts, retries with exponential backoff and jitter on
429, 502-504, timeouts and connection errors; statuses, ``retry-after`` and backoff
follow :mod:`policies.contract`, as in the proxy. Answers are extracted with the task's extractor;
Best-of-N tasks get their candidates scored by the reward service. Every sample goes
to the :class:`~optimizer.cache.SampleCache` before it is used, so an interrupted
run re-run with the same arguments reads what it already paid for.

httpx errors are mapped to :mod:`policies.errors` here and nowhere else.

    async with httpx.AsyncClient() as client:
        sampler = HttpSampler(task, upstream, rows, client=client, cache=cache, run_key=key)
        batch = await sampler.sample(0, 3, 8)
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
import msgspec

from optimizer.cache import CachedSample, SampleCache
from optimizer.sampling import SampleBatch
from policies.contract import backoff_delay, should_retry_status, status_error
from policies.errors import (
    ApiError,
    RateLimited,
    SamplingError,
    UpstreamConnectError,
    UpstreamDisconnected,
    UpstreamTimeout,
)
from policies.extract import make_extractor
from policies.reward import RewardRequest, RewardResponse
from policies.taskfile import DatasetRow
from policies.tasks import TaskSpec
from policies.upstream import UpstreamSpec

__all__ = ["HttpSampler", "sample_seed"]

logger = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0


def sample_seed(run_key: str, prompt_id: str, query_id: str, draw: int) -> int:
    """The upstream ``seed`` of one sample: stable across re-runs, distinct per draw."""
    digest = hashlib.sha256(f"{run_key}\x00{prompt_id}\x00{query_id}\x00{draw}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class HttpSampler:
    """A :class:`~optimizer.sampling.Sampler` over an OpenAI-compatible upstream.

    ``rows`` are the dataset's questions (query index = row index). ``cache`` may be
    None (nothing is stored; an interruption loses what was paid for).
    """

    def __init__(
        self,
        task: TaskSpec,
        upstream: UpstreamSpec,
        rows: Sequence[DatasetRow],
        *,
        client: httpx.AsyncClient,
        run_key: str,
        cache: SampleCache | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: random.Random | None = None,
    ) -> None:
        self.task, self.upstream, self.rows = task, upstream, list(rows)
        self._client, self._cache, self._run_key = client, cache, run_key
        self._sleep, self._jitter = sleep, jitter or random.Random(0)
        self._semaphore = asyncio.Semaphore(upstream.max_concurrency)
        self._extract = make_extractor(task.extractor)
        self._headers = {"content-type": "application/json"}
        key = upstream.api_key()
        if key:
            self._headers["authorization"] = f"Bearer {key}"
        self._golds = tuple(row.answer if task.strategy == "majority" else None for row in rows)
        self.paid = 0
        self.cached = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost = 0.0

    @property
    def num_prompts(self) -> int:
        return len(self.task.prompts)

    @property
    def num_queries(self) -> int:
        return len(self.rows)

    @property
    def golds(self) -> Sequence[str | None]:
        return self._golds

    def _query_id(self, query_index: int) -> str:
        row = self.rows[query_index]
        return row.id if row.id is not None else str(query_index)

    async def sample(
        self, prompt_index: int, query_index: int, n: int, *, draw: int = 0
    ) -> SampleBatch:
        prompt_id = self.task.prompts[prompt_index].id
        query_id = self._query_id(query_index)
        draws = list(range(draw, draw + n))
        have: dict[int, CachedSample] = {}
        if self._cache is not None:
            have = await self._cache.get(self._run_key, prompt_id, query_id, draws)
        missing = [d for d in draws if d not in have]
        if missing:
            fresh = await self._fetch(prompt_index, query_index, missing)
            if self._cache is not None:
                await self._cache.put(self._run_key, prompt_id, query_id, list(fresh.items()))
            self.paid += len(fresh)
            have.update(fresh)
        hits = n - len(missing)
        self.cached += hits
        samples = [have[d] for d in draws]
        for s in samples:
            self.prompt_tokens += s.prompt_tokens
            self.completion_tokens += s.completion_tokens
            self.cost += s.cost
        rewards = None
        if self.task.strategy == "best_of_n":
            width = len(self.task.reward.objectives) if self.task.reward else 1
            rewards = tuple(s.rewards or (float("nan"),) * width for s in samples)
        return SampleBatch(
            answers=tuple(s.answer for s in samples),
            costs=tuple(s.cost for s in samples),
            rewards=rewards,
            prompt_tokens=sum(s.prompt_tokens for s in samples),
            completion_tokens=sum(s.completion_tokens for s in samples),
            cached=hits,
        )

    async def _fetch(
        self, prompt_index: int, query_index: int, draws: list[int]
    ) -> dict[int, CachedSample]:
        prompt = self.task.prompts[prompt_index]
        messages = prompt.render(self.rows[query_index].question)
        query_id = self._query_id(query_index)
        texts: list[
            tuple[str, int, int, float]
        ] = []  # text, prompt tokens, completion tokens, cost
        pending = list(draws)
        while pending:
            if self.upstream.supports_n:
                batch = pending
                got = await self._complete(messages, len(batch), batch[0], prompt.id, query_id)
            else:
                results = await asyncio.gather(
                    *(self._complete(messages, 1, d, prompt.id, query_id) for d in pending)
                )
                got = [choice for result in results for choice in result]
            if not got:
                raise SamplingError(f"upstream {self.upstream.name!r} returned no choices")
            texts.extend(got)
            pending = pending[len(got) :]
        rewards: list[tuple[float, ...] | None] = [None] * len(draws)
        if self.task.strategy == "best_of_n":
            rewards = list(await self._score(messages, [t[0] for t in texts]))
        out: dict[int, CachedSample] = {}
        for d, (text, p_tok, c_tok, cost), reward in zip(draws, texts, rewards, strict=True):
            answer = self._extract(text) if self.task.strategy == "majority" else None
            out[d] = CachedSample(text, answer, reward, p_tok, c_tok, cost)
        return out

    async def _complete(
        self, messages: list[dict[str, Any]], n: int, draw: int, prompt_id: str, query_id: str
    ) -> list[tuple[str, int, int, float]]:
        body: dict[str, Any] = {
            "model": self.upstream.model,
            "messages": messages,
            "n": n,
            "temperature": self.upstream.temperature,
            "seed": sample_seed(self._run_key, prompt_id, query_id, draw),
        }
        if self.upstream.max_tokens is not None:
            body["max_tokens"] = self.upstream.max_tokens
        data = await self._post(self.upstream.chat_url, body, self.upstream.name)
        try:
            choices = data["choices"]
            usage = data.get("usage") or {}
            p_tok = int(usage.get("prompt_tokens", 0))
            c_tok = int(usage.get("completion_tokens", 0))
            contents = [str(c["message"].get("content") or "") for c in choices][:n]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SamplingError(
                f"upstream {self.upstream.name!r}: malformed response: {exc}"
            ) from None
        if not contents:
            return []
        # Usage covers all choices of the call: share it equally among them.
        share = len(contents)
        cost = self.upstream.cost(p_tok, c_tok) / share
        return [(text, p_tok // share, c_tok // share, cost) for text in contents]

    async def _score(
        self, messages: list[dict[str, Any]], candidates: list[str]
    ) -> list[tuple[float, ...]]:
        reward = self.task.reward
        assert reward is not None  # TaskSpec checks best_of_n has a reward section
        if reward.kind != "iapo":
            raise SamplingError(
                "the optimizer scores with the iapo reward contract (kind = 'iapo')"
            )
        request = RewardRequest(
            candidates=candidates,
            objectives=list(reward.objectives),
            messages=messages,
            model=reward.model,
        )
        data = await self._post(reward.url, msgspec.to_builtins(request), "reward")
        try:
            response = msgspec.convert(data, RewardResponse)
        except msgspec.ValidationError as exc:
            raise SamplingError(f"reward service: malformed response: {exc}") from None
        if len(response.scores) != len(candidates) or any(
            len(row) != len(reward.objectives) for row in response.scores
        ):
            expected = f"{len(candidates)} rows of {len(reward.objectives)} scores"
            raise SamplingError(f"reward service: expected {expected}")
        order = [response.objectives.index(o) for o in reward.objectives]
        return [tuple(float(row[i]) for i in order) for row in response.scores]

    async def _post(self, url: str, body: dict[str, Any], name: str) -> Any:
        """POST with retries; returns the decoded JSON or raises SamplingError."""
        what = f"upstream {name!r}"
        attempts = self.upstream.max_retries + 1
        timeout = httpx.Timeout(self.upstream.timeout_s, connect=self.upstream.connect_timeout_s)
        last: ApiError | None = None
        for attempt in range(attempts):
            retryable = True
            try:
                async with self._semaphore:
                    response = await self._client.post(
                        url, json=body, headers=self._headers, timeout=timeout
                    )
                if response.status_code == 200:
                    return response.json()
                last = status_error(
                    name,
                    response.status_code,
                    response.text[:200],
                    retry_after=response.headers.get("retry-after"),
                )
                if last is None:  # another 2xx: not the answer the contract asks for
                    raise SamplingError(f"{what}: answered {response.status_code}, not 200")
                retryable = should_retry_status(response.status_code)
            except httpx.ConnectTimeout as exc:
                last = UpstreamConnectError(f"{what}: connect timed out: {exc!r}")
            except httpx.TimeoutException as exc:
                last = UpstreamTimeout(f"{what}: timed out: {exc!r}")
            except httpx.ConnectError as exc:
                last = UpstreamConnectError(f"{what}: cannot connect: {exc!r}")
            except httpx.TransportError as exc:
                last = UpstreamDisconnected(f"{what}: broke off the response: {exc!r}")
            except ValueError as exc:  # a 200 whose body is not JSON
                raise SamplingError(f"{what}: response is not JSON: {exc}") from None
            if not retryable or attempt == attempts - 1:
                break
            delay = backoff_delay(
                attempt + 1,
                base_s=0.5,
                cap_s=MAX_BACKOFF_S,
                rng=self._jitter,
                retry_after=last.retry_after if isinstance(last, RateLimited) else None,
            )
            logger.info(
                "%s: %s; retry %d/%d in %.1fs", what, last.message, attempt + 1, attempts - 1, delay
            )
            await self._sleep(delay)
        assert last is not None
        raise SamplingError(
            f"{what}: gave up after {attempt + 1} attempt(s): {last.message}"
        ) from last
