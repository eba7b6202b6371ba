"""The demo's traffic: requests through the proxy with the real ``openai`` SDK, scored.

Each request names its task and tier in headers (``X-IAPO-Task``, ``X-IAPO-Tier``) and
asks a held-out question. Majority-vote answers are scored against the gold answer;
Best-of-N answers by the reward service, weighted by the tier's objective weights. A
tier's row reports mean quality, cost and samples per request, p50 latency and mean
utility (quality − λ·cost), with the standard error of that mean.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx
import msgspec
import numpy as np
import openai

from policies.aggregate import weight_vector
from policies.extract import make_extractor
from policies.reward import RewardRequest, RewardResponse, RewardSpec
from policies.taskfile import DatasetRow
from policies.tasks import TaskSpec
from policies.tiers import Tier

__all__ = ["Answer", "TierStats", "ask_all", "score_answers", "summarize"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    """What the proxy answered one request (``text`` None: the request failed)."""

    row: DatasetRow
    text: str | None
    cost: float
    samples: int
    latency_s: float


@dataclass(frozen=True)
class TierStats:
    """One tier's traffic, summarised."""

    requests: int
    failed: int
    quality: float
    cost: float
    samples: float
    latency_p50_s: float
    utility: float
    utility_stderr: float


async def _ask(
    client: openai.AsyncOpenAI, task: str, tier: str, row: DatasetRow, model: str
) -> Answer:
    started = time.perf_counter()
    try:
        raw = await client.chat.completions.with_raw_response.create(
            model=model,
            messages=[{"role": "user", "content": row.question}],
            extra_headers={"X-IAPO-Task": task, "X-IAPO-Tier": tier},
        )
    except openai.APIError as exc:
        logger.warning("request %s (%s/%s) failed: %s", row.id, task, tier, exc)
        return Answer(row, None, 0.0, 0, time.perf_counter() - started)
    latency = time.perf_counter() - started
    completion = raw.parse()
    text = completion.choices[0].message.content or "" if completion.choices else ""
    cost = float(raw.headers.get("x-iapo-cost", "0") or 0.0)
    samples = int(raw.headers.get("x-iapo-samples", "0/0").split("/")[-1] or 0)
    return Answer(row, text, cost, samples, latency)


async def ask_all(
    client: openai.AsyncOpenAI,
    task: str,
    tier: str,
    rows: Sequence[DatasetRow],
    *,
    concurrency: int,
    model: str = "iapo-sim",
    progress: Callable[[int], None] | None = None,
) -> list[Answer]:
    """Send one request per row, at most ``concurrency`` at a time; answers in row order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(row: DatasetRow) -> Answer:
        async with gate:
            answer = await _ask(client, task, tier, row, model)
        if progress is not None:
            progress(1)
        return answer

    return list(await asyncio.gather(*(one(row) for row in rows)))


async def score_answers(
    spec: TaskSpec, tier: Tier, answers: Sequence[Answer], http: httpx.AsyncClient
) -> list[float]:
    """Quality per answer: correctness (majority) or weighted reward (Best-of-N); NaN if failed."""
    if spec.strategy == "majority":
        extract = make_extractor(spec.extractor)
        return [
            math.nan if a.text is None else float(extract(a.text) == a.row.answer) for a in answers
        ]
    assert spec.reward is not None
    scored = [a.text for a in answers if a.text is not None]
    rows = await _reward(spec.reward, scored, http) if scored else []
    weights = weight_vector(spec.reward.objectives, tier.objective_weights)
    values = iter(float(np.dot(row, weights)) for row in rows)
    return [math.nan if a.text is None else next(values) for a in answers]


async def _reward(spec: RewardSpec, texts: list[str], http: httpx.AsyncClient) -> list[list[float]]:
    request = RewardRequest(candidates=texts, objectives=list(spec.objectives))
    response = await http.post(spec.url, content=msgspec.json.encode(request), timeout=60.0)
    response.raise_for_status()
    return msgspec.json.decode(response.content, type=RewardResponse).scores


def summarize(answers: Sequence[Answer], quality: Sequence[float], cost_weight: float) -> TierStats:
    """Mean quality, cost, samples, p50 latency and utility over the answered requests."""
    ok = [i for i, a in enumerate(answers) if a.text is not None and math.isfinite(quality[i])]
    if not ok:
        nan = math.nan
        return TierStats(len(answers), len(answers), nan, nan, nan, nan, nan, nan)
    q = np.array([quality[i] for i in ok])
    cost = np.array([answers[i].cost for i in ok])
    utility = q - cost_weight * cost
    stderr = float(utility.std(ddof=1) / math.sqrt(len(ok))) if len(ok) > 1 else math.nan
    return TierStats(
        requests=len(answers),
        failed=len(answers) - len(ok),
        quality=float(q.mean()),
        cost=float(cost.mean()),
        samples=float(np.mean([answers[i].samples for i in ok])),
        latency_p50_s=float(np.median([answers[i].latency_s for i in ok])),
        utility=float(utility.mean()),
        utility_stderr=stderr,
    )
