from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import numpy as np
import pytest

from policies import ExtractorSpec, StopRule, majority_vote, make_extractor
from proxy.breaker import CircuitBreaker, CircuitOpen
from proxy.metrics import ProxyMetrics
from proxy.sampling import confident_wave, draw_samples, next_wave
from proxy.upstream import UpstreamClient
from tests.proxy.scripted import mock_client


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_k_failures_then_half_opens_one_probe() -> None:
    clock, states = Clock(), []
    breaker = CircuitBreaker(
        "up", failure_threshold=3, cooldown_s=10, clock=clock, on_change=states.append
    )
    for _ in range(2):
        breaker.before_call()
        breaker.record_failure()
    breaker.before_call()
    breaker.record_success()  # a success resets the count
    for _ in range(3):
        breaker.before_call()
        breaker.record_failure()
    assert breaker.state == "open"
    with pytest.raises(CircuitOpen) as excinfo:
        breaker.before_call()
    assert excinfo.value.status_code == 503
    assert excinfo.value.should_retry
    clock.now = 10.0
    breaker.before_call()  # the probe
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # only one probe at a time
    breaker.record_failure()
    assert breaker.state == "open"
    clock.now = 25.0
    breaker.before_call()
    breaker.record_success()
    assert breaker.state == "closed"
    assert states == ["closed", "open", "half_open", "open", "half_open", "closed"]


@pytest.mark.parametrize(
    ("counts", "remaining", "expected"),
    [
        ({}, 8, 5),  # 5 unanimous votes out of 8 decide
        ({}, 1, 1),
        ({"a": 5}, 3, 1),
        ({"a": 3, "b": 2}, 3, 2),  # 5 > 2 + 1
        ({"a": 4, "b": 1}, 3, 1),
    ],
)
def test_next_wave_is_the_fewest_samples_that_could_decide(
    counts: dict[str, int], remaining: int, expected: int
) -> None:
    assert next_wave(Counter(counts), remaining) == expected


def scripted_client(
    answers: list[str], *, supports_n: bool, fail_on: set[int] | None = None
) -> tuple[UpstreamClient, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    counter = iter(range(10_000))

    def handler(request: httpx.Request) -> httpx.Response:
        import json

        body = json.loads(request.content)
        seen.append(body)
        if fail_on and len(seen) - 1 in fail_on:
            return httpx.Response(500, json={"error": {"message": "boom"}})
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": answers[next(counter) % len(answers)]},
            }
            for i in range(body.get("n", 1))
        ]
        usage = {"prompt_tokens": 1, "completion_tokens": len(choices)}
        return httpx.Response(200, json={"choices": choices, "usage": usage, "model": "m"})

    metrics = ProxyMetrics()
    client = mock_client(handler, metrics=metrics)
    return client, seen


def deadline() -> float:
    return asyncio.get_running_loop().time() + 5


async def test_exact_early_stop_draws_waves_and_stops_when_decided() -> None:
    client, seen = scripted_client(["12"], supports_n=True)
    extract = make_extractor(ExtractorSpec())
    result = await draw_samples(
        client,
        {"messages": []},
        n=8,
        supports_n=True,
        extractor=extract,
        stop=StopRule(kind="exact"),
        deadline=deadline(),
    )
    # 5 unanimous votes of 8 decide: one wave with n=5, nothing more
    assert [b["n"] for b in seen] == [5]
    assert result.launched == 5
    assert result.early_stopped


async def test_confident_stop_draws_smaller_waves_and_says_why_it_stopped() -> None:
    client, seen = scripted_client(["12"], supports_n=True)
    extract = make_extractor(ExtractorSpec())
    result = await draw_samples(
        client,
        {"messages": []},
        n=32,
        supports_n=True,
        extractor=extract,
        stop=StopRule(kind="confident", delta=0.05),
        deadline=deadline(),
    )
    # exact stopping needs 17 unanimous votes of 32; waves of at most N/8 stop far sooner
    assert all(b["n"] <= 4 for b in seen)
    assert result.launched < 17
    assert result.stopped == "confident"
    assert result.launched == len(result.samples) + result.failed + result.cancelled


async def test_early_stop_gives_the_full_votes_answer(seed: int) -> None:
    rng = np.random.default_rng(seed)
    extract = make_extractor(ExtractorSpec())
    for trial in range(30):
        answers = [str(x) for x in rng.choice([1, 2, 3], size=8, p=[0.6, 0.3, 0.1])]
        full_client, _ = scripted_client(answers, supports_n=False)
        stop_client, _ = scripted_client(answers, supports_n=False)
        full = await draw_samples(
            full_client,
            {},
            n=8,
            supports_n=False,
            extractor=extract,
            stop=StopRule(kind="full"),
            deadline=deadline(),
        )
        stopped = await draw_samples(
            stop_client,
            {},
            n=8,
            supports_n=True,
            extractor=extract,
            stop=StopRule(kind="exact"),
            deadline=deadline(),
        )
        full_vote = majority_vote([s.answer for s in full.samples], np.random.default_rng(0))
        stop_vote = majority_vote([s.answer for s in stopped.samples], np.random.default_rng(0))
        if len(full_vote.tied) == 1:
            assert stop_vote.answer == full_vote.answer, f"seed {seed} trial {trial}: {answers}"
        assert stopped.launched <= 8


async def test_failed_calls_do_not_vote_and_the_rest_are_kept() -> None:
    client, seen = scripted_client(["7"], supports_n=False, fail_on={1, 3})
    result = await draw_samples(
        client,
        {},
        n=4,
        supports_n=False,
        extractor=None,
        stop=StopRule(kind="full"),
        deadline=deadline(),
    )
    assert len(seen) == 4
    assert len(result.samples) == 2
    assert result.failed == 2
    assert [e.status_code for e in result.errors] == [502, 502]
    assert result.completion_tokens == 2


@pytest.mark.parametrize(
    ("tally", "remaining"),
    [({}, 32), ({"a": 3}, 20), ({"a": 5, "b": 2}, 9), ({"a": 2, "b": 2}, 12), ({"a": 1}, 7)],
)
def test_a_confident_wave_is_the_fewest_samples_that_could_stop_the_vote(
    tally: dict[str, int], remaining: int
) -> None:
    rule = StopRule(kind="confident", delta=0.05)
    counts = Counter(tally)
    most = next_wave(counts, remaining)
    size = confident_wave(counts, remaining, rule, most)
    assert 1 <= size <= most
    leader = counts.most_common(1)[0][0] if counts else ""

    def stops_after(extra: int) -> bool:
        grown = Counter(counts)
        grown[leader] += extra
        return rule.reason(grown, remaining - extra) is not None

    if size < most:
        assert stops_after(size)
    assert not any(stops_after(extra) for extra in range(1, size))
    # it never asks for more than exact stopping would, and less when confidence can come first
    if tally == {}:
        assert size < most
