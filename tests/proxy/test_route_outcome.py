"""A request's way through the proxy: a route value before dispatch, an immutable outcome
after the run, and one guard for the API key on every route."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from policies import UnknownTier
from proxy.completions import TaskOutcome, record_of
from proxy.request import read_headers
from proxy.route import PassthroughRoute, TaskPlan, resolve_route
from tests.proxy.conftest import chat_body, make_config, running_proxy
from tests.proxy.scripted import ScriptedUpstream

ANSWERS = ["maybe 7", "so 12", "12", "12"]


async def test_requests_resolve_to_a_route_value_before_dispatch(tmp_path: Path) -> None:
    config = make_config(tmp_path, task={"aliases": ["math-solver"]})
    async with running_proxy(config, ScriptedUpstream(ANSWERS)) as (_, service):
        by_alias = resolve_route(
            service,
            read_headers(None, "premium", None),
            msgspec.json.encode(chat_body(model="math-solver")),
        )
        other = resolve_route(
            service,
            read_headers(None, None, None),
            msgspec.json.encode(chat_body(model="gpt-x", stream=True)),
        )
        with pytest.raises(UnknownTier):
            resolve_route(
                service, read_headers("math", "gold", None), msgspec.json.encode(chat_body())
            )
    assert isinstance(by_alias, TaskPlan)
    assert (by_alias.served.name, by_alias.tier_name, by_alias.n) == ("math", "premium", 8)
    assert by_alias.body["model"] == "up-model"
    assert by_alias.body["messages"][0]["role"] == "system"
    assert other == PassthroughRoute(model="gpt-x", stream=True)


async def test_one_outcome_feeds_the_response_the_metrics_and_the_log(tmp_path: Path) -> None:
    upstream = ScriptedUpstream(ANSWERS)
    outcomes: list[TaskOutcome] = []
    async with running_proxy(make_config(tmp_path), upstream) as (client, _):
        import proxy.chat as chat

        original = chat.account_task

        def spy(service_: object, outcome: TaskOutcome, latency_s: float) -> None:
            outcomes.append(outcome)
            original(service_, outcome, latency_s)  # type: ignore[arg-type]

        chat.account_task = spy  # type: ignore[assignment]
        try:
            response = await client.post(
                "/v1/chat/completions",
                json=chat_body(),
                headers={"X-IAPO-Task": "math", "X-IAPO-Tier": "standard"},
            )
        finally:
            chat.account_task = original  # type: ignore[assignment]
        metrics = (await client.get("/metrics")).text
    (outcome,) = outcomes
    with pytest.raises(AttributeError):
        outcome.status = 500  # type: ignore[misc]
    assert response.headers["x-iapo-samples"] == f"{outcome.used}/{outcome.launched}" == "4/4"
    assert response.headers["x-iapo-agreement"] == f"{outcome.agreement:.4f}"
    assert response.json()["usage"] == outcome.usage
    assert f'iapo_samples_total{{task="math",tier="standard"}} {float(outcome.launched)}' in metrics
    row = record_of(outcome, 0.5)
    assert (row.samples_launched, row.samples_used, row.status) == (4, 4, 200)
    assert (row.agreement, row.cost) == (outcome.agreement, outcome.cost)
    assert row.content is None
    logged = msgspec.json.decode(record_of(outcome, 0.5, content=True).content or "")
    assert logged["answer"] == response.json()["choices"][0]["message"]["content"] == "so 12"


@pytest.mark.parametrize("path", ["/v1/models", "/metrics", "/healthz", "/readyz"])
async def test_one_guard_checks_the_key_on_every_route(tmp_path: Path, path: str) -> None:
    auth = {"keys_env": "KEYS", "open_metrics": False, "open_health": False}
    config = make_config(tmp_path, auth=auth)
    async with running_proxy(config, ScriptedUpstream(), env={"KEYS": "k1"}) as (client, service):
        refused = await client.get(path)
        allowed = await client.get(path, headers={"Authorization": "Bearer k1"})
        chat = await client.post(
            "/v1/chat/completions", json=chat_body(), headers={"X-IAPO-Task": "math"}
        )
        metrics = service.metrics.render().decode()
    assert refused.status_code == 401
    assert refused.json()["error"]["type"] == "authentication_error"
    assert allowed.status_code == 200
    assert chat.status_code == 401
    # a refused chat request is counted, under its task, like any refusal
    assert (
        'iapo_requests_total{status_class="4xx",strategy="none",task="math",tier="other"} 1.0'
        in metrics
    )
