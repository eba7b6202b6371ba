"""The live sampler: samples from an OpenAI-compatible upstream over httpx.

Bounded concurrency (the upstream's ``max_concurrency``), a per-sample ``seed`` so
repeated samples differ, timeouts, retries with exponential backoff and jitter on
429, 502-504, timeouts and connection errors (statuses, ``retry-after`` and backoff follow
:mod:`policies.contract`, as in the proxy). Answers are extracted with the task's extractor;
Best-of-N tasks get their candidates scored by the reward service through
:class:`policies.scoring.RewardScorer`, the proxy's own client (iapo contract, vLLM
``/pooling`` and ``/score``), with the same retries on the reward's own key, timeout
and concurrency limit. A candidate the service cannot score stays unscored (NaN).
Every sample goes to the :class:`~optimizer.cache.SampleCache` as soon as it is paid
for, and its scores once they come, so an interrupted run re-run with the same
arguments reads what it already paid for (and only re-asks the reward service).

httpx errors are mapped to :mod:`policies.errors` in :mod:`optimizer._http` and nowhere else.

    async with httpx.AsyncClient() as client:
        sampler = HttpSampler(task, upstream, rows, client=client, cache=cache, run_key=key)
        batch = await sampler.sample(0, 3, 8)
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
import msgspec
import numpy as np

from optimizer._http import Poster
from optimizer.cache import CachedSample, SampleCache
from optimizer.sampling import SampleBatch
from policies.errors import ApiError, SamplingError
from policies.extract import make_extractor
from policies.reward import RewardSpec
from policies.scoring import RewardScorer
from policies.taskfile import DatasetRow
from policies.tasks import TaskSpec
from policies.upstream import UpstreamSpec

__all__ = ["HttpSampler", "reward_key", "sample_seed"]

logger = logging.getLogger(__name__)


def sample_seed(run_key: str, prompt_id: str, query_id: str, draw: int) -> int:
    """The upstream ``seed`` of one sample: stable across re-runs, distinct per draw."""
    digest = hashlib.sha256(f"{run_key}\x00{prompt_id}\x00{query_id}\x00{draw}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def reward_key(spec: RewardSpec) -> str:
    """What a sample's stored scores depend on: the reward's kind, URL, model, objectives."""
    identity = msgspec.json.encode([spec.kind, spec.url, spec.model, list(spec.objectives)])
    return hashlib.sha256(identity).hexdigest()[:16]


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
        self._cache, self._run_key = cache, run_key
        self._extract = make_extractor(task.extractor)
        jitter = jitter or random.Random(0)
        headers = {"content-type": "application/json"}
        key = upstream.api_key()
        if key:
            headers["authorization"] = f"Bearer {key}"
        self._chat = Poster(
            upstream.name,
            f"upstream {upstream.name!r}",
            client,
            headers=headers,
            timeout=httpx.Timeout(upstream.timeout_s, connect=upstream.connect_timeout_s),
            max_concurrency=upstream.max_concurrency,
            max_retries=upstream.max_retries,
            sleep=sleep,
            jitter=jitter,
        )
        self._scorer: RewardScorer[Poster] | None = None
        self._reward_key: str | None = None
        if task.strategy == "best_of_n":
            reward = task.reward
            assert reward is not None  # TaskSpec checks best_of_n has a reward section
            reward_headers = {"content-type": "application/json"}
            reward_api_key = reward.api_key()  # the reward's own key, never the upstream's
            if reward_api_key:
                reward_headers["authorization"] = f"Bearer {reward_api_key}"
            poster = Poster(
                "reward",
                "reward service",
                client,
                headers=reward_headers,
                timeout=httpx.Timeout(
                    reward.timeout_s, connect=min(upstream.connect_timeout_s, reward.timeout_s)
                ),
                max_concurrency=upstream.max_concurrency,
                max_retries=upstream.max_retries,
                sleep=sleep,
                jitter=jitter,
            )
            self._scorer = RewardScorer(reward, poster)
            self._reward_key = reward_key(reward)
        self._golds = tuple(row.answer if task.strategy == "majority" else None for row in rows)
        self.paid = 0
        self.cached = 0
        self.scored = 0
        self.unscored = 0
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
        if self._scorer is not None:
            stale = {d: have[d] for d in draws if have[d].reward_key != self._reward_key}
            if stale:
                have.update(await self._score(prompt_index, query_index, stale))
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
        """Pay for samples ``draws`` (not yet scored by the reward service)."""
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
        out: dict[int, CachedSample] = {}
        for d, (text, p_tok, c_tok, cost) in zip(draws, texts, strict=True):
            answer = self._extract(text) if self.task.strategy == "majority" else None
            out[d] = CachedSample(text, answer, None, p_tok, c_tok, cost)
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
        if self.upstream.top_p is not None:
            body["top_p"] = self.upstream.top_p
        what = self._chat.what
        try:
            content = await self._chat.post_json(self.upstream.chat_url, msgspec.json.encode(body))
        except ApiError as exc:
            raise SamplingError(exc.message) from exc
        try:
            data = msgspec.json.decode(content)
        except msgspec.DecodeError as exc:
            raise SamplingError(f"{what}: response is not JSON: {exc}") from None
        try:
            choices = data["choices"]
            usage = data.get("usage") or {}
            p_tok = int(usage.get("prompt_tokens", 0))
            c_tok = int(usage.get("completion_tokens", 0))
            contents = [str(c["message"].get("content") or "") for c in choices][:n]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SamplingError(f"{what}: malformed response: {exc}") from None
        if not contents:
            return []
        # Usage covers all choices of the call: share it equally among them.
        share = len(contents)
        cost = self.upstream.cost(p_tok, c_tok) / share
        return [(text, p_tok // share, c_tok // share, cost) for text in contents]

    async def _score(
        self, prompt_index: int, query_index: int, samples: dict[int, CachedSample]
    ) -> dict[int, CachedSample]:
        """``samples`` with the reward service's scores (NaN where it gave none), stored."""
        assert self._scorer is not None
        assert self._reward_key is not None
        messages = self.task.prompts[prompt_index].render(self.rows[query_index].question)
        draws = list(samples)
        try:
            matrix = await self._scorer.score(
                messages, [samples[d].text for d in draws], deadline=math.inf
            )
        except ApiError as exc:
            if exc.should_retry or exc.status_code in (401, 403):
                # The service is down or refuses us: stop; a re-run scores what is cached.
                raise SamplingError(
                    f"{exc.message} (the samples are paid for and cached; a re-run scores them)"
                ) from exc
            # It refused these candidates themselves (a 4xx): they stay unscored, as a
            # re-run would get the same answer.
            logger.warning("%s; %d sample(s) stay unscored", exc.message, len(draws))
            matrix = np.full((len(draws), len(self._scorer.objectives)), np.nan)
        scored = {
            d: msgspec.structs.replace(
                samples[d],
                rewards=tuple(float(x) for x in row),
                reward_key=self._reward_key,
            )
            for d, row in zip(draws, matrix, strict=True)
        }
        unscored = int(np.isnan(matrix).any(axis=1).sum())
        self.scored += len(draws) - unscored
        self.unscored += unscored
        if self._cache is not None:
            prompt_id, query_id = self.task.prompts[prompt_index].id, self._query_id(query_index)
            await self._cache.set_rewards(
                self._run_key,
                prompt_id,
                query_id,
                self._reward_key,
                [(d, s.rewards) for d, s in scored.items() if s.rewards is not None],
            )
        return scored
