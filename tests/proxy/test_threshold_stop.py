"""Sequential Best-of-N through the real app: a ``stop = "threshold"`` tier draws its
samples in waves (one, then pairs), scores each wave, and stops at the first weighted
reward at or above the policy's threshold, never past N."""

from __future__ import annotations

import itertools
from pathlib import Path

import httpx
import msgspec
import pytest

from policies import Policy, RewardSpec
from tests.proxy.conftest import chat_body, make_config, make_policy, running_proxy
from tests.proxy.scripted import ScriptedUpstream

TASK = {"X-IAPO-Task": "math", "X-IAPO-Tier": "standard"}
REWARD = RewardSpec(url="http://upstream.test/v1/reward", objectives=("quality",))
# Sample i answers "s<i>"; its reward is SCORES[i].
SCORES = [0.1, 0.5, 0.9, 0.95, 0.2, 0.3, 0.4, 0.6]


def threshold_policy(threshold: float, n: int = 8) -> Policy:
    policy = make_policy(ns={"standard": n}, strategy="best_of_n", reward=REWARD)
    tier = msgspec.structs.replace(
        policy.tiers["standard"], stop="threshold", threshold=threshold, expected_samples=3.0
    )
    return msgspec.structs.replace(policy, tiers={"standard": tier})


def scripted(supports_n: bool = True) -> ScriptedUpstream:
    return ScriptedUpstream(
        [f"s{i}" for i in range(len(SCORES))],
        supports_n=supports_n,
        rewards=lambda text: [SCORES[int(text[1:])]],
    )


def metric(text: str, name: str) -> float:
    line = next(x for x in text.splitlines() if x.startswith(name))
    return float(line.rsplit(" ", 1)[1])


@pytest.mark.parametrize("supports_n", [True, False])
async def test_a_threshold_tier_stops_at_the_first_wave_over_the_threshold(
    tmp_path: Path, supports_n: bool
) -> None:
    upstream = scripted(supports_n)
    config = make_config(tmp_path, threshold_policy(0.8), supports_n=supports_n)
    async with running_proxy(config, upstream) as (client, _):
        response = await client.post("/v1/chat/completions", json=chat_body(), headers=TASK)
        metrics = (await client.get("/metrics")).text
    assert response.status_code == 200, response.text
    # Wave 1 is s0 (0.1), wave 2 is s1, s2 (0.5, 0.9): 0.9 ≥ 0.8 stops; s3 is never drawn.
    assert response.json()["choices"][0]["message"]["content"] == "s2"
    assert response.headers["x-iapo-stopped"] == "threshold"
    assert response.headers["x-iapo-early-stopped"] == "true"
    assert response.headers["x-iapo-samples"] == "3/3"
    assert response.headers["x-iapo-score"] == "0.9"
    assert sum(upstream.sample_ns()) == 3
    assert upstream.sample_ns() == ([1, 2] if supports_n else [1, 1, 1])
    # One scoring call per wave (a fan-out wave's samples in the order they arrived).
    assert [sorted(r["candidates"]) for r in upstream.reward_requests] == [["s0"], ["s1", "s2"]]
    labels = 'task="math",tier="standard"'
    assert metric(metrics, f'iapo_vote_stops_total{{reason="threshold",{labels}}}') == 1.0
    assert metric(metrics, f"iapo_samples_saved_total{{{labels}}}") == 5.0
    assert metric(metrics, f"iapo_sampling_waves_sum{{{labels}}}") == 2.0
    assert metric(metrics, f"iapo_early_stopped_total{{{labels}}}") == 1.0


async def test_a_threshold_no_reward_reaches_draws_exactly_n_in_waves(tmp_path: Path) -> None:
    upstream = scripted()
    config = make_config(tmp_path, threshold_policy(0.99, n=8))
    async with running_proxy(config, upstream) as (client, _):
        response = await client.post("/v1/chat/completions", json=chat_body(), headers=TASK)
        metrics = (await client.get("/metrics")).text
    assert response.status_code == 200, response.text
    assert upstream.sample_ns() == [1, 2, 2, 2, 1]
    assert response.headers["x-iapo-stopped"] == "full"
    assert "x-iapo-early-stopped" not in response.headers
    assert response.headers["x-iapo-samples"] == "8/8"
    # The best of all eight: s3 (0.95).
    assert response.json()["choices"][0]["message"]["content"] == "s3"
    assert len(upstream.reward_requests) == 5
    labels = 'task="math",tier="standard"'
    assert metric(metrics, f'iapo_vote_stops_total{{reason="full",{labels}}}') == 1.0
    assert metric(metrics, f"iapo_sampling_waves_sum{{{labels}}}") == 5.0


async def test_a_reward_reached_in_the_last_wave_is_no_early_stop(tmp_path: Path) -> None:
    upstream = scripted()
    config = make_config(tmp_path, threshold_policy(0.85, n=3))
    async with running_proxy(config, upstream) as (client, _):
        response = await client.post("/v1/chat/completions", json=chat_body(), headers=TASK)
    assert response.status_code == 200, response.text
    assert upstream.sample_ns() == [1, 2]
    assert response.headers["x-iapo-stopped"] == "full"
    assert response.json()["choices"][0]["message"]["content"] == "s2"


async def test_a_reward_service_failing_mid_way_draws_the_rest_unscored(tmp_path: Path) -> None:
    upstream = scripted()
    calls = itertools.count()

    def reward(request: httpx.Request) -> httpx.Response:
        if next(calls) == 0:
            return httpx.Response(200, json={"objectives": ["quality"], "scores": [[0.1]]})
        return httpx.Response(500, json={"error": "down"})

    config = make_config(tmp_path, threshold_policy(0.8))
    transports = {"reward": httpx.MockTransport(reward)}
    async with running_proxy(config, upstream, transports=transports) as (client, _):
        response = await client.post("/v1/chat/completions", json=chat_body(), headers=TASK)
    assert response.status_code == 200, response.text
    # Wave 2 could not be scored: the rest of N in one wave, as fixed N would have drawn.
    assert upstream.sample_ns() == [1, 2, 5]
    assert response.headers["x-iapo-samples"] == "8/8"
    assert response.headers["x-iapo-stopped"] == "full"
    assert response.headers["x-iapo-unranked"] == "reward service failed (server_error)"
    # The best sample scored before the failure (the only one: s0, 0.1), not a silent pick.
    assert response.json()["choices"][0]["message"]["content"] == "s0"
    assert response.headers["x-iapo-score"] == "0.1"


async def test_a_config_can_serve_a_threshold_tier_at_fixed_n(tmp_path: Path) -> None:
    upstream = scripted()
    config = make_config(
        tmp_path, threshold_policy(0.8), task={"tiers": {"standard": {"stop": "full"}}}
    )
    async with running_proxy(config, upstream) as (client, _):
        response = await client.post("/v1/chat/completions", json=chat_body(), headers=TASK)
    assert response.status_code == 200, response.text
    assert upstream.sample_ns() == [8]
    assert response.headers["x-iapo-stopped"] == "full"
    assert response.json()["choices"][0]["message"]["content"] == "s3"
