"""Security: keys required by default and compared in constant time, secrets and content
never logged or exported, literal keys refused in the config, metric labels bounded."""

from __future__ import annotations

import logging
import sqlite3
import tomllib
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import proxy.auth
from policies import ConfigError
from proxy.app import create_app
from proxy.config import load_config, parse_config
from tests.reliability.conftest import (
    AUTH,
    PROXY_KEY,
    TASK,
    assert_openai_error,
    chat,
    fault_upstream,
    make_config,
    proxy_client,
)

UPSTREAM_KEY = "sk-upstream-secret-0b9e77f2"
SECRET_TEXT = "my-private-question-5d2c8a"


def minimal_raw(**extra: Any) -> dict[str, Any]:
    return {
        "upstreams": [{"name": "up", "base_url": "http://127.0.0.1:9/v1", "model": "m"}],
        **extra,
    }


def test_keys_are_required_unless_explicitly_disabled() -> None:
    with pytest.raises(ConfigError, match="disabled = true"):
        parse_config(minimal_raw(), env={})
    assert parse_config(minimal_raw(auth={"disabled": True}), env={}).auth.disabled


def test_a_named_but_unset_key_variable_refuses_to_start() -> None:
    config = parse_config(minimal_raw(auth={"keys_env": "IAPO_KEYS_UNSET"}), env={})
    with pytest.raises(ConfigError, match="IAPO_KEYS_UNSET"):
        create_app(config, env={})


@pytest.mark.parametrize("field", ["api_key", "key", "token", "API_KEY", "authorization"])
def test_a_literal_upstream_key_in_the_config_is_refused(tmp_path: Path, field: str) -> None:
    file = tmp_path / "proxy.toml"
    file.write_text(
        f"""
[auth]
disabled = true
[[upstreams]]
name = "up"
base_url = "http://127.0.0.1:9/v1"
model = "m"
{field} = "{UPSTREAM_KEY}"
""",
        encoding="utf-8",
    )
    assert tomllib.loads(file.read_text())["upstreams"][0][field] == UPSTREAM_KEY
    with pytest.raises(ConfigError) as caught:
        load_config(file, env={})
    message = str(caught.value)
    assert "environment variable" in message
    assert UPSTREAM_KEY not in message  # the refusal does not echo the secret


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer wrong-key"},
        {"authorization": f"Basic {PROXY_KEY}"},
        {"authorization": "Bearer "},
        {"authorization": PROXY_KEY},
        {"authorization": f"Bearer {PROXY_KEY}x"},
    ],
    ids=["missing", "wrong", "basic", "empty", "no-scheme", "suffix"],
)
async def test_requests_without_the_right_key_get_401(
    tmp_path: Path, headers: dict[str, str]
) -> None:
    async with fault_upstream() as upstream:
        config = make_config(tmp_path, upstream.base_url)
        async with proxy_client(config) as (client, _):
            responses = [
                await client.post("/v1/chat/completions", json=chat(), headers=headers),
                await client.post(
                    "/v1/chat/completions", json=chat(), headers={**headers, "x-iapo-task": "math"}
                ),
                await client.get("/v1/models", headers=headers),
                await client.get("/metrics", headers=headers),
            ]
            ok = await client.post("/v1/chat/completions", json=chat(), headers=AUTH)
    for response in responses:
        error = assert_openai_error(response, 401)
        assert error["type"] == "authentication_error"
    assert upstream.stats.chat_requests == 1  # only the authenticated request went upstream
    assert ok.status_code == 200


async def test_keys_are_compared_in_constant_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = proxy.auth.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(proxy.auth.hmac, "compare_digest", spy)
    async with fault_upstream() as upstream:
        config = make_config(tmp_path, upstream.base_url)
        env = {"IAPO_TEST_KEYS": f"other-key,{PROXY_KEY}"}
        async with proxy_client(config, env=env) as (client, _):
            wrong = await client.get("/v1/models", headers={"authorization": "Bearer nope"})
            right = await client.get("/v1/models", headers=AUTH)
    assert (wrong.status_code, right.status_code) == (401, 200)
    # every configured key is compared, whether or not an earlier one matched
    assert len(calls) == 4
    assert all(PROXY_KEY.encode() not in pair for pair in calls)  # digests, not keys


async def test_secrets_and_content_never_reach_logs_metrics_or_the_request_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("UP_KEY", UPSTREAM_KEY)  # the upstream key is read from os.environ
    async with fault_upstream(script=("503", "ok", "malformed", "reset", "ok")) as upstream:
        config = make_config(tmp_path, upstream.base_url, upstream={"api_key_env": "UP_KEY"})
        async with proxy_client(config) as (client, service):
            body = chat(f"{SECRET_TEXT}: what is 6 times 7?")
            statuses = [
                (await client.post("/v1/chat/completions", json=body, headers=h)).status_code
                for h in (TASK, AUTH, TASK, {"authorization": f"Bearer {UPSTREAM_KEY}"})
            ]
            metrics = (await client.get("/metrics", headers=AUTH)).text
    assert statuses[-1] == 401  # the upstream's key is not a proxy key
    # the upstream gets the upstream key, never the client's proxy key
    sent = {r.headers.get("authorization") for r in upstream.received}
    assert sent == {f"Bearer {UPSTREAM_KEY}"}
    for secret in (PROXY_KEY, UPSTREAM_KEY, SECRET_TEXT):
        assert secret not in caplog.text, secret
        assert secret not in metrics, secret
    assert service.request_log is not None
    with sqlite3.connect(tmp_path / "requests.sqlite") as db:
        dump = "\n".join(db.iterdump())
    assert "request_log" in dump
    for secret in (PROXY_KEY, UPSTREAM_KEY, SECRET_TEXT):
        assert secret not in dump, secret


async def test_content_is_logged_only_when_switched_on(tmp_path: Path) -> None:
    async with fault_upstream() as upstream:
        config = make_config(
            tmp_path, upstream.base_url, extra={"request_log": {"log_content": True}}
        )
        async with proxy_client(config) as (client, _):
            r = await client.post(
                "/v1/chat/completions", json=chat(f"{SECRET_TEXT}?"), headers=TASK
            )
    assert r.status_code == 200
    with sqlite3.connect(tmp_path / "requests.sqlite") as db:
        contents = [row[0] for row in db.execute("SELECT content FROM request_log")]
    assert len(contents) == 1
    assert SECRET_TEXT in contents[0]


def label_values(metrics_text: str) -> dict[str, set[str]]:
    values: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            for name, value in sample.labels.items():
                values.setdefault(name, set()).add(value)
    return values


async def test_metric_labels_stay_bounded(tmp_path: Path) -> None:
    async with fault_upstream() as upstream:
        config = make_config(tmp_path, upstream.base_url)
        async with proxy_client(config) as (client, _):
            junk = [
                {**AUTH, "x-iapo-task": "evil-task"},
                {**TASK, "x-iapo-tier": "gold"},
                {**TASK, "x-iapo-tier": "x" * 64},
                {**AUTH, "x-iapo-task": "a b c"},
            ]
            errors = [
                await client.post("/v1/chat/completions", json=chat(), headers=h) for h in junk
            ]
            models = [f"model-{i}" for i in range(5)]
            for model in models:
                await client.post(
                    "/v1/chat/completions", json={**chat(), "model": model}, headers=AUTH
                )
            await client.post("/v1/chat/completions", json=chat(), headers=TASK)
            metrics = (await client.get("/metrics", headers=AUTH)).text
    for response in errors:
        assert_openai_error(response, 400)
    assert "valid tiers: economy, premium, standard" in errors[1].json()["error"]["message"]
    assert "valid tasks: math" in errors[0].json()["error"]["message"]
    values = label_values(metrics)
    assert values["task"] <= {"math", "passthrough", "other"}
    assert values["tier"] <= {"economy", "standard", "premium", "none", "other"}
    assert values["upstream"] <= {"up", "reward", "other"}
    everything = set().union(*values.values())
    for leaked in ("evil-task", "gold", "x" * 64, *models, PROXY_KEY):
        assert leaked not in everything


def test_iapo_serve_check_refuses_a_literal_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from iapo.cli import main

    file = tmp_path / "proxy.toml"
    file.write_text(
        f"""
[auth]
keys_env = "IAPO_TEST_KEYS"
[[upstreams]]
name = "up"
base_url = "http://127.0.0.1:9/v1"
model = "m"
api_key = "{UPSTREAM_KEY}"
""",
        encoding="utf-8",
    )
    assert main(["serve", "--config", str(file), "--check"]) == 2
    err = capsys.readouterr().err
    assert "api_key_env" in err
    assert UPSTREAM_KEY not in err
