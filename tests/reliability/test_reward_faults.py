"""Best-of-N when the reward service misbehaves: the samples still answer (unranked, and
the missing ``x-iapo-score`` says so); a healthy reward service picks the best sample."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies import Policy, RewardSpec
from tests.reliability.conftest import (
    TASK,
    chat,
    fault_upstream,
    make_config,
    make_policy,
    proxy_client,
)

STANDARD = {**TASK, "x-iapo-tier": "standard"}  # N=4


def reward_policy(base_url: str, timeout_s: float = 5.0) -> Policy:
    spec = RewardSpec(url=base_url + "/reward", objectives=("quality",), timeout_s=timeout_s)
    return make_policy(reward=spec)


async def test_a_healthy_reward_service_picks_the_best_sample(tmp_path: Path) -> None:
    async with fault_upstream(answers=("42", "7"), answer_weights=(1, 3)) as upstream:
        config = make_config(tmp_path, upstream.base_url, policy=reward_policy(upstream.base_url))
        async with proxy_client(config) as (client, _):
            responses = [
                await client.post("/v1/chat/completions", json=chat(), headers=STANDARD)
                for _ in range(6)
            ]
    assert upstream.stats.reward_requests == 6
    for response in responses:
        assert response.status_code == 200, response.text
        assert response.headers["x-iapo-samples"] == "4/4"
        assert "x-iapo-unranked" not in response.headers
        content = response.json()["choices"][0]["message"]["content"]
        # the answer is a "42" sample exactly when one was drawn (score 1, else all 0)
        assert ("\\boxed{42}" in content) == (response.headers.get("x-iapo-score") == "1")


@pytest.mark.parametrize("fault", ["500", "502", "reset", "malformed", "truncate", "hang", "stall"])
async def test_reward_faults_fall_back_to_an_unranked_answer(tmp_path: Path, fault: str) -> None:
    # the first call draws the 4 samples; every reward call (retries included) fails
    async with fault_upstream(script=("ok",) + (fault,) * 5) as upstream:
        policy = reward_policy(upstream.base_url, timeout_s=0.3)
        config = make_config(tmp_path, upstream.base_url, policy=policy)
        async with proxy_client(config) as (client, _):
            response = await client.post("/v1/chat/completions", json=chat(), headers=STANDARD)
    assert response.status_code == 200, response.text
    assert response.headers["x-iapo-samples"] == "4/4"
    assert "x-iapo-score" not in response.headers
    assert response.headers["x-iapo-unranked"].startswith("reward service failed (")
    assert response.json()["choices"][0]["message"]["content"].endswith("\\boxed{42}.")
    assert upstream.stats.reward_requests >= 1
