"""Requests the proxy must refuse or shape: errors that teach, auth, caps, retries, deadline."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.proxy.conftest import chat_body, make_config, make_policy, running_proxy
from tests.proxy.scripted import ScriptedUpstream

TASK = {"X-IAPO-Task": "math"}


def error_of(response: object) -> dict[str, object]:
    body = response.json()  # type: ignore[attr-defined]
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]  # type: ignore[no-any-return]


async def test_unknown_task_and_tier_name_the_valid_values(tmp_path: Path) -> None:
    async with running_proxy(make_config(tmp_path), ScriptedUpstream()) as (client, _):
        task = await client.post(
            "/v1/chat/completions", json=chat_body(), headers={"X-IAPO-Task": "physics"}
        )
        tier = await client.post(
            "/v1/chat/completions", json=chat_body(), headers={**TASK, "X-IAPO-Tier": "gold"}
        )
        metrics = (await client.get("/metrics")).text
    assert task.status_code == 400
    assert error_of(task)["code"] == "unknown_task"
    assert "valid tasks: math" in str(error_of(task)["message"])
    assert tier.status_code == 400
    assert error_of(tier)["code"] == "unknown_tier"
    assert "economy, premium, standard" in str(error_of(tier)["message"])
    assert task.headers["x-should-retry"] == "false"
    # refused requests are counted, with unknown names as "other"
    assert (
        'iapo_requests_total{status_class="4xx",strategy="none",task="other",tier="other"} 1.0'
        in metrics
    )
    assert 'task="math",tier="other"} 1.0' in metrics
    assert "physics" not in metrics
    assert "gold" not in metrics


@pytest.mark.parametrize(
    ("content", "param", "fragment"),
    [
        (b"{not json", None, "not valid JSON"),
        (
            b'{"messages": [{"role": "user", "content": "x"}], "n": "three"}',
            "$.n",
            "Expected `int`",
        ),
        (b'{"messages": []}', "$.messages", "length"),
        (b'{"messages": [{"role": "robot", "content": "x"}]}', "$.messages[0].role", "robot"),
        (b'{"messages": [{"role": "user", "content": 5}]}', "$.messages[0].content", "Expected"),
        (b'{"model": "m", "messages": "hi"}', None, "invalid request body"),
        (b'{"model": "m\xff", "messages": []}', None, "UTF-8"),
        (b"[" * 5000 + b"]" * 5000, None, "request body"),
    ],
)
async def test_malformed_bodies_get_400_that_names_the_field(
    tmp_path: Path, content: bytes, param: str | None, fragment: str
) -> None:
    headers = {"content-type": "application/json"}
    if (param and param.startswith("$.messages")) or param == "$.n":
        headers.update(TASK)
    async with running_proxy(make_config(tmp_path), ScriptedUpstream()) as (client, _):
        response = await client.post("/v1/chat/completions", content=content, headers=headers)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["type"] == "invalid_request_error"
    assert fragment in str(error["message"])
    if param is not None:
        assert error["param"] == param


@pytest.mark.parametrize(
    ("header", "value"),
    [("X-IAPO-Tier", "gold plated"), ("X-IAPO-Task", "x" * 80), ("X-IAPO-Deadline-Ms", "soon")],
)
async def test_bad_headers_get_400(tmp_path: Path, header: str, value: str) -> None:
    async with running_proxy(make_config(tmp_path), ScriptedUpstream()) as (client, _):
        response = await client.post(
            "/v1/chat/completions", json=chat_body(), headers={**TASK, header: value}
        )
    assert response.status_code == 400
    assert error_of(response)["param"] == header


async def test_body_size_limit_and_unknown_path(tmp_path: Path) -> None:
    config = make_config(tmp_path, server={"max_body_bytes": 2048})
    async with running_proxy(config, ScriptedUpstream()) as (client, _):
        big = await client.post("/v1/chat/completions", json=chat_body("x" * 5000), headers=TASK)
        missing = await client.get("/v2/nothing")
    assert big.status_code == 413
    assert error_of(big)["code"] == "request_too_large"
    assert missing.status_code == 404
    assert "POST /v1/chat/completions" in str(error_of(missing)["message"])


async def test_proxy_keys_are_required_and_metrics_can_be_keyed(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"hashed-key").hexdigest()
    auth = {"keys_env": "IAPO_KEYS", "key_sha256": [digest], "open_metrics": False}
    upstream = ScriptedUpstream()
    config = make_config(tmp_path, auth=auth)
    env = {"IAPO_KEYS": "k-one, k-two"}
    async with running_proxy(config, upstream, env=env) as (client, _):
        none = await client.post("/v1/chat/completions", json=chat_body(), headers=TASK)
        wrong = await client.post(
            "/v1/chat/completions", json=chat_body(), headers={**TASK, "Authorization": "Bearer k"}
        )
        good = [
            await client.post(
                "/v1/chat/completions",
                json=chat_body(),
                headers={**TASK, "Authorization": f"Bearer {key}"},
            )
            for key in ("k-two", "hashed-key")
        ]
        metrics_open = await client.get("/metrics")
        metrics_keyed = await client.get("/metrics", headers={"Authorization": "Bearer k-one"})
        health = await client.get("/healthz")
    assert none.status_code == 401
    assert error_of(none)["type"] == "authentication_error"
    assert wrong.status_code == 401
    assert [r.status_code for r in good] == [200, 200]
    assert metrics_open.status_code == 401
    assert metrics_keyed.status_code == 200
    assert health.status_code == 200
    # the client's key is never forwarded upstream
    assert all("authorization" not in h for h in upstream.headers)


async def test_tier_caps_reduce_n_and_say_so(tmp_path: Path) -> None:
    upstream = ScriptedUpstream()
    config = make_config(
        tmp_path,
        task={"tiers": {"premium": {"max_n": 3}, "standard": {"max_cost": 0.5}}},
    )
    async with running_proxy(config, upstream) as (client, _):
        premium = await client.post(
            "/v1/chat/completions", json=chat_body(), headers={**TASK, "X-IAPO-Tier": "premium"}
        )
        # 100 completion tokens at 2.0/1k = 0.2 per sample (+ a little prompt): 2 fit in 0.5
        standard = await client.post(
            "/v1/chat/completions",
            json=chat_body(max_tokens=100),
            headers={**TASK, "X-IAPO-Tier": "standard"},
        )
        metrics = (await client.get("/metrics")).text
    assert premium.headers["x-iapo-n-capped"] == "8->3"
    assert standard.headers["x-iapo-n-capped"] == "4->2"
    assert upstream.sample_ns() == [3, 2]
    assert 'iapo_n_capped_total{task="math",tier="premium"} 1.0' in metrics


async def test_policy_max_n_caps_too(tmp_path: Path) -> None:
    upstream = ScriptedUpstream()
    config = make_config(tmp_path, make_policy(max_n={"premium": 5}))
    async with running_proxy(config, upstream) as (client, _):
        response = await client.post(
            "/v1/chat/completions", json=chat_body(), headers={**TASK, "X-IAPO-Tier": "premium"}
        )
    assert response.headers["x-iapo-n-capped"] == "8->5"


async def test_retryable_upstream_errors_are_retried(tmp_path: Path) -> None:
    upstream = ScriptedUpstream()
    upstream.fail_next([503, (429, {"retry-after": "0"}), 502])
    async with running_proxy(make_config(tmp_path, max_retries=3), upstream) as (client, svc):
        response = await client.post("/v1/chat/completions", json=chat_body(), headers=TASK)
        metrics = (await client.get("/metrics")).text
    assert response.status_code == 200, response.text
    assert upstream.calls == 4
    assert 'iapo_upstream_errors_total{kind="rate_limited",upstream="up"} 1.0' in metrics
    assert 'iapo_upstream_errors_total{kind="server_error",upstream="up"} 2.0' in metrics
    assert svc.upstreams["up"].breaker.state == "closed"


async def test_client_errors_from_the_upstream_keep_their_status(tmp_path: Path) -> None:
    upstream = ScriptedUpstream()
    upstream.always_fail = 400
    async with running_proxy(make_config(tmp_path, max_retries=3), upstream) as (client, _):
        response = await client.post("/v1/chat/completions", json=chat_body(), headers=TASK)
    assert response.status_code == 400
    assert upstream.calls == 1  # a 400 is not retried
    assert response.headers["x-should-retry"] == "false"


async def test_deadline_header_bounds_the_request(tmp_path: Path) -> None:
    upstream = ScriptedUpstream(latency_s=2.0)
    async with running_proxy(make_config(tmp_path), upstream) as (client, _):
        response = await client.post(
            "/v1/chat/completions",
            json=chat_body(),
            headers={**TASK, "X-IAPO-Deadline-Ms": "150"},
        )
    assert response.status_code == 504
    assert error_of(response)["code"] == "upstream_timeout"
    assert response.headers["x-should-retry"] == "true"


async def test_models_and_readiness(tmp_path: Path) -> None:
    config = make_config(tmp_path, task={"aliases": ["math-solver"]})
    async with running_proxy(config, ScriptedUpstream()) as (client, svc):
        models = (await client.get("/v1/models")).json()
        ready = await client.get("/readyz")
        label = svc.registry.tasks["math"].label if svc.registry else ""
    ids = [m["id"] for m in models["data"]]
    assert ids == ["math", "math-solver", "up-model"]
    assert ready.status_code == 200
    assert ready.json()["tasks"] == {"math": label}
