"""Scoring Best-of-N candidates: the iapo reward contract, and a vLLM reward-model adapter.

One implementation for both halves: the proxy scores live requests with it, the
optimizer scores the samples it draws, so a policy is chosen with the rewards it is
served with. Each brings its own :class:`RewardTransport` (the proxy's upstream client
with its breaker and metrics; the optimizer's retrying poster).

``kind = "iapo"`` speaks the contract documented in ``policies/reward.py``: one POST
with the conversation and all candidates, one row of K objective scores per candidate.

``kind = "vllm"`` calls a reward model served by vLLM (``vllm serve RM --task reward``
or a cross-encoder ``--task score``), which yields one objective:

- URL ending in ``/score``: ``{"model", "text_1": question, "text_2": [candidates]}``
  → ``{"data": [{"index": i, "score": s}]}``;
- otherwise (``/pooling``): one call per candidate, in parallel, with the conversation
  and the candidate as the assistant's turn, ``{"model", "messages": [..., {"role":
  "assistant", "content": candidate}]}``, so vLLM applies the reward model's own chat
  template (reward models are trained on it; plain concatenated text scores wrongly)
  → ``{"data": [{"index": 0, "data": ...}]}``. A reward model may return one value or
  one per token, so the last value is the candidate's reward. A failed call leaves
  its candidate unscored; if every call fails, the first error is raised.

Both return an (N, K) float matrix in the order of ``spec.objectives``; a candidate
the service did not score is a NaN row, so Best-of-N picks among the others.

    scorer = RewardScorer(task.reward, transport)
    matrix = await scorer.score(messages, ["answer 1", "answer 2"], deadline=deadline)
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt

from policies.errors import ApiError, UpstreamError
from policies.reward import RewardRequest, RewardResponse, RewardSpec
from policies.tasks import question_of

__all__ = ["RewardScorer", "RewardTransport"]

logger = logging.getLogger(__name__)


class RewardTransport(Protocol):
    """How a :class:`RewardScorer` reaches the reward service."""

    async def post_json(self, url: str, content: bytes, *, deadline: float) -> bytes:
        """POST the JSON ``content`` to ``url`` (retrying where safe, giving up at the
        event-loop time ``deadline``); the 2xx body, else an :class:`ApiError`."""
        ...

    def count_error(self, kind: str) -> None:
        """Account an error the scorer found in a 2xx body (kind ``"bad_response"``)."""
        ...


TransportT = TypeVar("TransportT", bound=RewardTransport)


class _ScoreItem(msgspec.Struct, frozen=True):
    index: int
    score: float


class _PoolingItem(msgspec.Struct, frozen=True):
    index: int
    data: Any


class _ScoreResponse(msgspec.Struct, frozen=True):
    data: list[_ScoreItem]


class _PoolingResponse(msgspec.Struct, frozen=True):
    data: list[_PoolingItem]


def _last_value(data: Any) -> float:
    while isinstance(data, list) and data:
        data = data[-1]
    if isinstance(data, bool) or not isinstance(data, int | float):
        raise ValueError(f"not a reward value: {data!r}")
    return float(data)


class RewardScorer(Generic[TransportT]):
    """Scores candidates as ``spec`` says, through ``client``."""

    def __init__(self, spec: RewardSpec, client: TransportT) -> None:
        self.spec = spec
        self.client = client

    @property
    def objectives(self) -> tuple[str, ...]:
        return self.spec.objectives

    async def score(
        self, messages: Sequence[dict[str, Any]], candidates: Sequence[str], *, deadline: float
    ) -> npt.NDArray[np.float64]:
        """(N, K) scores of ``candidates`` as answers to ``messages``; ApiError if unusable."""
        if self.spec.kind == "iapo":
            return await self._score_iapo(messages, candidates, deadline)
        return await self._score_vllm(messages, candidates, deadline)

    async def _score_iapo(
        self, messages: Sequence[dict[str, Any]], candidates: Sequence[str], deadline: float
    ) -> npt.NDArray[np.float64]:
        request = RewardRequest(
            candidates=list(candidates),
            objectives=list(self.objectives),
            messages=list(messages),
            model=self.spec.model,
        )
        body = await self.client.post_json(
            self.spec.url, msgspec.json.encode(request), deadline=deadline
        )
        try:
            response = msgspec.json.decode(body, type=RewardResponse)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise self._bad(f"not a reward response: {exc}") from None
        if len(response.scores) != len(candidates):
            raise self._bad(f"{len(response.scores)} score rows for {len(candidates)} candidates")
        missing = [o for o in self.objectives if o not in response.objectives]
        if missing:
            raise self._bad(f"the response lacks objectives {missing}")
        columns = [response.objectives.index(o) for o in self.objectives]
        matrix = np.full((len(candidates), len(columns)), np.nan)
        for i, row in enumerate(response.scores):
            if len(row) == len(response.objectives):
                matrix[i] = [row[c] if math.isfinite(row[c]) else np.nan for c in columns]
        return matrix

    async def _score_vllm(
        self, messages: Sequence[dict[str, Any]], candidates: Sequence[str], deadline: float
    ) -> npt.NDArray[np.float64]:
        if not self.spec.url.rstrip("/").endswith("/score"):
            return await self._score_pooling(messages, candidates, deadline)
        matrix = np.full((len(candidates), 1), np.nan)
        payload: dict[str, Any] = {"text_1": question_of(messages), "text_2": list(candidates)}
        if self.spec.model is not None:
            payload["model"] = self.spec.model
        body = await self.client.post_json(
            self.spec.url, msgspec.json.encode(payload), deadline=deadline
        )
        try:
            for item in msgspec.json.decode(body, type=_ScoreResponse).data:
                if 0 <= item.index < len(candidates) and math.isfinite(item.score):
                    matrix[item.index, 0] = item.score
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise self._bad(f"not a vLLM score response: {exc}") from None
        return matrix

    async def _score_pooling(
        self, messages: Sequence[dict[str, Any]], candidates: Sequence[str], deadline: float
    ) -> npt.NDArray[np.float64]:
        async def one(candidate: str) -> float:
            payload: dict[str, Any] = {
                "messages": [*messages, {"role": "assistant", "content": candidate}]
            }
            if self.spec.model is not None:
                payload["model"] = self.spec.model
            body = await self.client.post_json(
                self.spec.url, msgspec.json.encode(payload), deadline=deadline
            )
            try:
                data = msgspec.json.decode(body, type=_PoolingResponse).data
                if not data:
                    raise ValueError("no data")
                return _last_value(data[0].data)
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                raise self._bad(f"not a vLLM pooling response: {exc}") from None

        results = await asyncio.gather(*(one(c) for c in candidates), return_exceptions=True)
        matrix = np.full((len(candidates), 1), np.nan)
        errors: list[ApiError] = []
        for i, result in enumerate(results):
            if isinstance(result, BaseException):
                if not isinstance(result, ApiError):
                    raise result
                errors.append(result)
            elif math.isfinite(result):
                matrix[i, 0] = result
        if errors and len(errors) == len(candidates):
            raise errors[0]
        if errors:
            logger.info(
                "reward service %s: %d of %d calls failed",
                self.spec.url,
                len(errors),
                len(candidates),
            )
        return matrix

    def _bad(self, why: str) -> UpstreamError:
        self.client.count_error("bad_response")
        return UpstreamError(f"reward service {self.spec.url}: {why}", code="bad_response")
