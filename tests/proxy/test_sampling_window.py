"""Latency-aware exact stopping: a sliding window of calls in flight and a larger first
wave keep the full vote's answer and count every sample once (the sizing itself:
``test_waves.py``)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import numpy as np
import pytest

from policies import ExtractorSpec, StopRule, majority_vote, make_extractor
from proxy.sampling import SamplingResult, draw_samples
from proxy.upstream import UpstreamClient
from tests.proxy.scripted import mock_client

EXACT = StopRule(kind="exact")


def held_client(
    answers: list[str], *, hold: int, release_at: int | None
) -> tuple[UpstreamClient, list[dict[str, Any]], asyncio.Event]:
    """Fan-out upstream answering call i with ``answers[i]``; call ``hold`` waits until
    call ``release_at`` arrives (None: until cancelled)."""
    seen: list[dict[str, Any]] = []
    release = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        index = len(seen)
        seen.append(json.loads(request.content))
        if release_at is not None and index == release_at:
            release.set()
        if index == hold:
            await release.wait()
        choices = [{"index": 0, "message": {"role": "assistant", "content": answers[index]}}]
        usage = {"prompt_tokens": 1, "completion_tokens": 1}
        return httpx.Response(200, json={"choices": choices, "usage": usage, "model": "m"})

    return mock_client(handler), seen, release  # type: ignore[arg-type]


def in_order(answers: list[str]) -> UpstreamClient:
    """An upstream serving ``answers`` in order, ``n`` at a time."""
    queue = iter(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        k = json.loads(request.content).get("n", 1)
        choices = [
            {"index": i, "message": {"role": "assistant", "content": next(queue)}} for i in range(k)
        ]
        usage = {"prompt_tokens": 1, "completion_tokens": k}
        return httpx.Response(200, json={"choices": choices, "usage": usage})

    return mock_client(handler)


def deadline() -> float:
    return asyncio.get_running_loop().time() + 5


async def test_the_window_slides_past_a_slow_call() -> None:
    # First wave 5 of 8; call 0 is slow. After calls 1-4 (3 for "1", 1 for "2") only 1 call
    # is in flight but 2 are needed to decide: call 5 goes out before call 0 returns, and
    # call 0 is released only by call 5's arrival (without the window: the deadline).
    answers = ["1", "1", "1", "1", "2", "1", "1", "1"]
    client, seen, _ = held_client(answers, hold=0, release_at=5)
    result = await draw_samples(
        client,
        {},
        n=8,
        supports_n=False,
        extractor=make_extractor(ExtractorSpec()),
        stop=EXACT,
        deadline=deadline(),
    )
    assert not result.errors
    assert len(seen) == 6
    assert result.stopped == "exact"
    assert majority_vote([s.answer for s in result.samples], np.random.default_rng(0)).answer == "1"
    assert len(result.samples) + result.failed + result.cancelled == result.launched == 6


async def test_a_decided_vote_cancels_the_slow_call_and_bills_it_once() -> None:
    answers = ["2", "1", "1", "1", "1", "1", "1", "1"]
    client, seen, _ = held_client(answers, hold=0, release_at=None)
    result = SamplingResult(samples=[])
    await draw_samples(
        client,
        {},
        n=8,
        supports_n=False,
        extractor=make_extractor(ExtractorSpec()),
        stop=EXACT,
        deadline=deadline(),
        first_wave=6,
        result=result,
    )
    # 5 votes for "1" of 8 decide; the slow call 0 is cancelled, never counted as used
    assert len(seen) == 6
    assert result.cancelled == 1
    assert len(result.samples) == 5
    assert len(result.samples) + result.failed + result.cancelled == result.launched == 6
    assert result.completion_tokens == len(result.samples)


@pytest.mark.parametrize(
    ("supports_n", "first_wave"), [(True, None), (False, None), (True, 6), (False, 7)]
)
async def test_latency_aware_waves_give_the_full_votes_answer(
    seed: int, supports_n: bool, first_wave: int | None
) -> None:
    rng = np.random.default_rng(seed)
    extract = make_extractor(ExtractorSpec())
    for trial in range(40):
        n = int(rng.integers(3, 13))
        answers = [str(x) for x in rng.choice([1, 2, 3], size=n, p=[0.6, 0.3, 0.1])]
        result = await draw_samples(
            in_order(answers),
            {},
            n=n,
            supports_n=supports_n,
            extractor=extract,
            stop=EXACT,
            deadline=deadline(),
            first_wave=first_wave,
        )
        full = majority_vote(answers, np.random.default_rng(0))
        stopped = majority_vote([s.answer for s in result.samples], np.random.default_rng(0))
        where = f"seed {seed} trial {trial}: {answers}"
        if len(full.tied) == 1:
            assert stopped.answer == full.answer, where
        assert len(result.samples) + result.failed + result.cancelled == result.launched, where
        assert result.launched <= n, where
