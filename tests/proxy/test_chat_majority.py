from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import httpx
import msgspec
import pytest

from tests.proxy.conftest import SYSTEM_PROMPT, chat_body, make_config, make_policy, running_proxy
from tests.proxy.scripted import ScriptedUpstream

ANSWERS = ["So it is 12.", "I get 7", "12", "Answer: 12", "no idea", "7", "12", "7"]


async def test_majority_vote_applies_prompt_draws_n_and_sums_usage(tmp_path: Path) -> None:
    upstream = ScriptedUpstream(ANSWERS)
    async with running_proxy(make_config(tmp_path), upstream) as (client, _):
        response = await client.post(
            "/v1/chat/completions",
            json=chat_body(),
            headers={"X-IAPO-Task": "math", "X-IAPO-Tier": "standard"},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    # one call with n=4 (the upstream honours n), the policy's system prompt first
    assert upstream.sample_ns() == [4]
    sent = upstream.requests[0]
    assert sent["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert sent["messages"][1]["content"] == "What is 6 + 6?"
    assert sent["model"] == "up-model"
    assert sent["temperature"] > 0
    assert "stream" not in sent
    # samples: "So it is 12.", "I get 7", "12", "Answer: 12" -> 12 wins with 3/4
    assert len(body["choices"]) == 1
    assert body["choices"][0]["message"]["content"] == "So it is 12."
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}
    headers = response.headers
    assert headers["x-iapo-task"] == "math"
    assert headers["x-iapo-tier"] == "standard"
    assert headers["x-iapo-samples"] == "4/4"
    assert headers["x-iapo-agreement"] == "0.7500"
    # cost: 10 prompt tokens at 1.0/1k + 20 completion tokens at 2.0/1k
    assert float(headers["x-iapo-cost"]) == pytest.approx(0.05)
    assert len(headers["x-iapo-policy"]) == 12


async def test_model_alias_and_default_tier(tmp_path: Path) -> None:
    upstream = ScriptedUpstream(ANSWERS)
    config = make_config(tmp_path, task={"aliases": ["math-solver"]})
    async with running_proxy(config, upstream) as (client, _):
        response = await client.post("/v1/chat/completions", json=chat_body(model="math-solver"))
    assert response.status_code == 200, response.text
    assert response.headers["x-iapo-tier"] == "standard"
    assert upstream.sample_ns() == [4]


async def test_tiers_change_n(tmp_path: Path) -> None:
    upstream = ScriptedUpstream(ANSWERS)
    async with running_proxy(make_config(tmp_path), upstream) as (client, _):
        for tier in ("economy", "premium"):
            response = await client.post(
                "/v1/chat/completions",
                json=chat_body(),
                headers={"X-IAPO-Task": "math", "X-IAPO-Tier": tier},
            )
            assert response.status_code == 200, response.text
    assert upstream.sample_ns() == [1, 8]


async def test_fan_out_without_n_support_uses_per_sample_seeds(tmp_path: Path) -> None:
    upstream = ScriptedUpstream(ANSWERS, supports_n=False)
    async with running_proxy(make_config(tmp_path, supports_n=False), upstream) as (client, _):
        response = await client.post(
            "/v1/chat/completions",
            json=chat_body(seed=100),
            headers={"X-IAPO-Task": "math", "X-IAPO-Tier": "standard"},
        )
    assert response.status_code == 200, response.text
    assert upstream.sample_ns() == [1, 1, 1, 1]
    assert sorted(r["seed"] for r in upstream.requests) == [100, 101, 102, 103]
    # no temperature in the policy: the upstream's, applied to every sample and reported
    assert all(r["temperature"] == pytest.approx(0.7) for r in upstream.requests)
    assert response.headers["x-iapo-temperature"] == "0.7"
    assert response.json()["usage"]["total_tokens"] == 4 * 15


async def test_client_n_above_one_is_refused_in_task_mode(tmp_path: Path) -> None:
    upstream = ScriptedUpstream(ANSWERS)
    async with running_proxy(make_config(tmp_path), upstream) as (client, _):
        response = await client.post(
            "/v1/chat/completions",
            json=chat_body(n=3),
            headers={"X-IAPO-Task": "math", "X-IAPO-Tier": "premium"},
        )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "n"
    assert upstream.calls == 0


async def test_template_prompt_wraps_the_question(tmp_path: Path) -> None:
    from policies import PromptCandidate

    policy = make_policy(
        prompt=PromptCandidate("tpl", "Q: {question}\nThink, then answer.", "template")
    )
    upstream = ScriptedUpstream(ANSWERS)
    async with running_proxy(make_config(tmp_path, policy), upstream) as (client, _):
        response = await client.post(
            "/v1/chat/completions",
            json=chat_body(
                messages=[
                    {"role": "system", "content": "be nice"},
                    {"role": "user", "content": "2+2?"},
                ]
            ),
            headers={"X-IAPO-Task": "math"},
        )
    assert response.status_code == 200, response.text
    messages = upstream.requests[0]["messages"]
    assert messages == [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "Q: 2+2?\nThink, then answer."},
    ]


async def test_streamed_task_without_usage_and_a_failed_stream_ends_in_an_error(
    tmp_path: Path,
) -> None:
    upstream = ScriptedUpstream(ANSWERS)
    async with running_proxy(make_config(tmp_path), upstream) as (client, _):
        ok = await client.post(
            "/v1/chat/completions", json=chat_body(stream=True), headers={"X-IAPO-Task": "math"}
        )
        upstream.always_fail = 502
        failed = await client.post(
            "/v1/chat/completions", json=chat_body(stream=True), headers={"X-IAPO-Task": "math"}
        )
    assert ok.headers["content-type"].startswith("text/event-stream")
    assert ok.headers["x-iapo-tier"] == "standard"
    assert ok.text.endswith("data: [DONE]\n\n")
    assert '"usage"' not in ok.text  # include_usage was not asked for
    assert '"content":"So it is 12."' in ok.text
    assert failed.status_code == 200  # the stream had started: the error is its last event
    assert "[DONE]" not in failed.text
    last = failed.text.strip().splitlines()[-1]
    assert last.startswith('data: {"error":')
    assert '"code":"upstream_error"' in last


async def ask_each_tier(
    client: httpx.AsyncClient, tiers: Sequence[str]
) -> dict[str, httpx.Response]:
    """One chat request of task math per tier, each answered 200."""
    responses = {}
    for tier in tiers:
        response = await client.post(
            "/v1/chat/completions",
            json=chat_body(),
            headers={"X-IAPO-Task": "math", "X-IAPO-Tier": tier},
        )
        assert response.status_code == 200, response.text
        responses[tier] = response
    return responses


async def test_stopping_rules_per_tier_say_how_they_stopped(tmp_path: Path) -> None:
    # premium (N=8) stops confidently, standard (N=4) exactly, economy (N=1) draws its one
    upstream = ScriptedUpstream(["12"])
    task = {"early_stop": True, "tiers": {"premium": {"stop": "confident", "delta": 0.05}}}
    async with running_proxy(make_config(tmp_path, task=task), upstream) as (client, _):
        responses = await ask_each_tier(client, ("economy", "standard", "premium"))
        text = (await client.get("/metrics")).text
    stopped = {tier: r.headers["x-iapo-stopped"] for tier, r in responses.items()}
    assert stopped == {"economy": "full", "standard": "exact", "premium": "confident"}
    drawn = int(responses["premium"].headers["x-iapo-samples"].split("/")[1])
    assert drawn < 8
    assert f'iapo_samples_saved_total{{task="math",tier="premium"}} {8 - drawn}.0' in text
    for tier, reason in stopped.items():
        assert f'iapo_vote_stops_total{{reason="{reason}",task="math",tier="{tier}"}} 1.0' in text
    assert 'iapo_sampling_waves_count{task="math",tier="premium"} 1.0' in text


async def test_a_tier_is_served_with_the_rule_the_policy_priced_it_under(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The policy priced premium under exact stopping and standard under confident; the
    # config is silent on premium and overrides standard to full (with a warning).
    policy = make_policy()
    tiers = dict(policy.tiers)
    tiers["premium"] = msgspec.structs.replace(tiers["premium"], stop="exact", expected_samples=5.0)
    tiers["standard"] = msgspec.structs.replace(tiers["standard"], stop="confident", delta=0.1)
    policy = msgspec.structs.replace(policy, tiers=tiers)
    task = {"tiers": {"standard": {"stop": "full"}}}
    upstream = ScriptedUpstream(["12"])
    with caplog.at_level(logging.WARNING, logger="proxy.tasks"):
        config = make_config(tmp_path, policy, task=task)
        async with running_proxy(config, upstream) as (client, _):
            responses = await ask_each_tier(client, ("standard", "premium"))
    stopped = {tier: r.headers["x-iapo-stopped"] for tier, r in responses.items()}
    assert stopped == {"standard": "full", "premium": "exact"}
    assert "serving stop = 'full' where the policy priced N under stop = 'confident'" in caplog.text
