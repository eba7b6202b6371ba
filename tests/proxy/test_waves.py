"""First waves sized from where earlier votes decided (``proxy.waves``), and the
decision point the sampler measures."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from policies import ExtractorSpec, StopRule, make_extractor
from proxy.sampling import draw_samples
from proxy.waves import WaveHistory, decision_point, first_wave_size, wave_target
from tests.proxy.conftest import chat_body, make_config, running_proxy
from tests.proxy.scripted import ScriptedUpstream, mock_client

EXACT = StopRule(kind="exact")
CONFIDENT = StopRule(kind="confident", delta=0.05)


@pytest.mark.parametrize(
    ("answers", "n", "point"),
    [
        (["1"] * 8, 8, 5),  # 5 unanimous votes: 3 more cannot catch up
        (["1", "2", "1", "1", "1", "1"], 8, 6),  # 4-1 after 5 could still tie
        (["1", "2"] * 4, 8, 8),  # never decided: all of N
        (["1", "2", "1"], 8, None),  # cut short undecided: nothing to learn
        ([None, "1", "1"], 3, 3),  # a sample without an answer counts but does not vote
        (["1", None, "2", "1", "1"], 5, 5),
    ],
)
def test_decision_point_is_the_first_prefix_that_decides(
    answers: list[str | None], n: int, point: int | None
) -> None:
    assert decision_point(answers, n, EXACT) == point


def test_decision_point_without_early_stopping_is_n() -> None:
    assert decision_point(["1"] * 4, 8, StopRule(kind="full")) == 8


def test_confident_stopping_decides_no_later_than_exact(seed: int) -> None:
    rng = np.random.default_rng(seed)
    earlier = 0
    for _ in range(50):
        answers: list[str | None] = [str(a) for a in rng.choice(3, size=16, p=[0.7, 0.2, 0.1])]
        exact, confident = (
            decision_point(answers, 16, EXACT),
            decision_point(answers, 16, CONFIDENT),
        )
        assert exact is not None, f"seed {seed}: {answers}"
        assert confident is not None, f"seed {seed}: {answers}"
        assert confident <= exact, f"seed {seed}: {answers}"
        earlier += confident < exact
    assert earlier > 0, f"seed {seed}"


@pytest.mark.parametrize(
    ("points", "second_trip", "size"),
    [
        ([5] * 5 + [8] * 5, 0.5, 5),
        ([5] * 5 + [8] * 5, 0.4, 8),
        ([5] * 4 + [6] * 2 + [8] * 4, 0.5, 6),
        ([], 0.5, 8),  # no history: all of N
        ([12], 0.5, 8),  # never more than N
    ],
)
def test_first_wave_size_takes_the_quantile(
    points: list[int], second_trip: float, size: int
) -> None:
    assert first_wave_size(8, points, second_trip=second_trip) == size


def test_first_wave_is_the_smallest_within_the_second_trip_bound(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(200):
        n = int(rng.integers(2, 33))
        points = [int(p) for p in rng.integers(n // 2 + 1, n + 1, size=int(rng.integers(1, 40)))]
        bound = float(rng.uniform(0.05, 0.95))
        size = first_wave_size(n, points, second_trip=bound)
        where = f"seed {seed}: n={n} bound={bound} points={points}"
        undecided = np.mean([p > size for p in points])
        assert undecided <= bound + 1e-12, where
        smaller = [p for p in points if p < size]
        if smaller:  # the next smaller candidate breaks the bound
            assert np.mean([p > max(smaller) for p in points]) > bound, where


def test_history_falls_back_to_expected_samples_then_keeps_the_latest() -> None:
    history = WaveHistory(size=10, min_points=4, second_trip=0.5)
    assert history.first_wave("k", 8) is None
    assert history.first_wave("k", 8, expected_samples=5.2) == 6
    history.record("k", None)
    for _ in range(3):
        history.record("k", 8)
    assert history.points("k") == [8, 8, 8]
    assert history.first_wave("k", 8, expected_samples=5.2) == 6  # 3 < min_points
    assert history.learned("k") == []
    for _ in range(10):
        history.record("k", 5)
    assert history.points("k") == [5] * 10  # the 8s are gone
    assert history.first_wave("k", 8) == 5
    assert history.learned("k") == [5] * 10
    assert history.first_wave("other", 8) is None


def serving(answers: list[str]) -> tuple[Callable[[httpx.Request], httpx.Response], list[str]]:
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        k = json.loads(request.content).get("n", 1)
        picks, queue[:] = queue[:k], queue[k:]
        choices = [
            {"index": i, "message": {"role": "assistant", "content": a}}
            for i, a in enumerate(picks)
        ]
        return httpx.Response(200, json={"choices": choices, "usage": {"completion_tokens": k}})

    return handler, queue


@pytest.mark.parametrize("supports_n", [True, False])
@pytest.mark.parametrize("first_wave", [None, 6])
async def test_the_sampler_measures_the_decision_point_of_the_whole_sequence(
    seed: int, supports_n: bool, first_wave: int | None
) -> None:
    # Stopping early must not bias what is learned: the decision point measured on the
    # samples that arrived is the one of any completion of them to N samples.
    rng = np.random.default_rng(seed)
    extract = make_extractor(ExtractorSpec())
    for trial in range(30):
        n = int(rng.choice([5, 8, 16]))
        stop = EXACT if trial % 2 else CONFIDENT
        answers = [str(a) for a in rng.choice(3, size=n, p=[0.6, 0.3, 0.1])]
        handler, unserved = serving(answers)
        result = await draw_samples(
            mock_client(handler),
            {},
            n=n,
            supports_n=supports_n,
            extractor=extract,
            stop=stop,
            deadline=asyncio.get_running_loop().time() + 5,
            first_wave=first_wave,
        )
        arrived = [s.answer for s in result.samples]
        where = f"seed {seed} trial {trial}: {answers}, arrived {arrived}"
        assert result.decided_at is not None, where
        whole = arrived + unserved + ["x"] * (n - len(arrived) - len(unserved))
        assert result.decided_at == decision_point(whole, n, stop), where
        assert result.decided_at <= len(arrived), where
        assert len(result.samples) + result.failed + result.cancelled == result.launched, where


async def test_the_proxy_learns_decision_points_and_logs_how_requests_stopped(
    tmp_path: Path,
) -> None:
    upstream = ScriptedUpstream(["12"])
    task = {"early_stop": True, "tiers": {"premium": {"stop": "confident", "delta": 0.05}}}
    config = make_config(tmp_path, task=task)
    async with running_proxy(config, upstream) as (client, service):
        for tier in ("economy", "standard", "premium", "standard"):
            response = await client.post(
                "/v1/chat/completions",
                json=chat_body(),
                headers={"X-IAPO-Task": "math", "X-IAPO-Tier": tier},
            )
            assert response.status_code == 200, response.text
        learned = {
            tier: service.waves.points(("math", tier, n))
            for tier, n in (("economy", 1), ("standard", 4), ("premium", 8))
        }
    # unanimous "12": standard (N=4, exact) decides after 3; economy (N=1) never stops early
    assert learned["standard"] == [3, 3]
    assert learned["economy"] == [1]
    assert len(learned["premium"]) == 1
    assert learned["premium"][0] < 5  # confident: before exact's 5 of 8
    with sqlite3.connect(tmp_path / "requests.sqlite") as db:
        rows = db.execute("SELECT tier, stopped FROM request_log ORDER BY id").fetchall()
    assert rows == [
        ("economy", "full"),
        ("standard", "exact"),
        ("premium", "confident"),
        ("standard", "exact"),
    ]


def test_a_later_wave_is_the_first_wave_rule_on_the_votes_still_undecided(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(200):
        n = int(rng.integers(2, 33))
        points = [int(p) for p in rng.integers(n // 2 + 1, n + 1, size=int(rng.integers(1, 40)))]
        launched = int(rng.integers(0, n))
        later = [p for p in points if p > launched]
        target = wave_target(n, points, launched, second_trip=0.4)
        where = f"seed {seed}: n={n} launched={launched} points={points}"
        if later:
            assert target == first_wave_size(n, later, second_trip=0.4), where
            assert target > launched, where
        else:
            assert target == 0, where


@pytest.mark.parametrize(("points", "waves", "launched"), [((), 3, 8), ((8,) * 20, 2, 8)])
async def test_later_waves_follow_the_votes_that_were_undecided_as_long(
    points: tuple[int, ...], waves: int, launched: int
) -> None:
    # 3-2 after the minimal first wave of 5: waves of 2 and 1 follow, unless the history
    # says votes undecided after 5 went on to 8; then the rest goes out at once.
    handler, _ = serving(["1", "2", "1", "2", "1", "2", "1", "1"])
    result = await draw_samples(
        mock_client(handler),
        {},
        n=8,
        supports_n=True,
        extractor=make_extractor(ExtractorSpec()),
        stop=EXACT,
        deadline=asyncio.get_running_loop().time() + 5,
        decision_points=points,
    )
    assert (result.waves, result.launched, result.decided_at) == (waves, launched, 8)
    assert len(result.samples) + result.failed + result.cancelled == result.launched
