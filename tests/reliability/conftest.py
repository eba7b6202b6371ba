"""Fixtures for the reliability suites: the real proxy in front of the fault upstream.

The upstream is always :class:`iapo.testing.FaultUpstream` on a real loopback socket
(so the proxy's real httpx client meets real resets, truncations and stalls). The proxy
runs either in-process through ``httpx.ASGITransport`` (``proxy_client``; not litestar's
test client, which runs the app on another thread's loop and would block this loop, where
the fault upstream lives) or
under a real uvicorn server in the test's own event loop (``uvicorn_proxy``), so a
test can close a real connection and then look at ``asyncio.all_tasks()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from iapo.testing import FaultUpstream
from policies import (
    BudgetSpent,
    ExtractorSpec,
    Policy,
    PromptCandidate,
    RewardSpec,
    Strategy,
    TierPolicy,
    save_policy,
)
from proxy.app import create_app
from proxy.config import ProxyConfig, parse_config
from proxy.protocol import guarded_protocol
from proxy.service import ProxyService
from tests.conftest import current_upstream_transport

PROXY_KEY = "iapo-test-proxy-key-7d1f0c"
AUTH = {"authorization": f"Bearer {PROXY_KEY}"}
TASK = {**AUTH, "x-iapo-task": "math"}
SYSTEM_PROMPT = "Think step by step and put the final answer in \\boxed{}."
# What one fault-upstream sample costs in completion tokens (see iapo.testing._openai).
SAMPLE_TOKENS = 10


def make_policy(
    ns: dict[str, int] | None = None,
    *,
    prompt_id: str = "boxed",
    reward: RewardSpec | None = None,
) -> Policy:
    """Tiers economy/standard/premium at N 1/4/8 unless told otherwise; majority vote,
    or Best-of-N scored by ``reward`` when one is given."""
    ns = ns or {"economy": 1, "standard": 4, "premium": 8}
    prompt = PromptCandidate(prompt_id, SYSTEM_PROMPT)
    strategy: Strategy = "majority" if reward is None else "best_of_n"
    return Policy(
        task="math",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        budget=BudgetSpent(100, 100),
        tiers={name: TierPolicy(prompt, n, strategy, 0.5, (0.4, 0.6)) for name, n in ns.items()},
        extractor=ExtractorSpec(kind="boxed"),
        reward=reward,
    )


def make_config(
    tmp_path: Path,
    upstream_url: str,
    *,
    policy: Policy | None = None,
    upstream: dict[str, Any] | None = None,
    auth: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> ProxyConfig:
    """A validated config: upstream ``up`` (the fault upstream), task ``math``, a request log."""
    policy_file = tmp_path / "math.policy.json"
    if policy is not None or not policy_file.exists():
        save_policy(policy or make_policy(), policy_file)
    raw: dict[str, Any] = {
        "upstreams": [
            {
                "name": "up",
                "base_url": upstream_url,
                "model": "fault-model",
                "max_retries": 2,
                "timeout_s": 10,
                "price_per_1k_prompt_tokens": 1.0,
                "price_per_1k_completion_tokens": 2.0,
                **(upstream or {}),
            }
        ],
        "tasks": [{"name": "math", "policy_file": str(policy_file)}],
        "auth": auth if auth is not None else {"keys_env": "IAPO_TEST_KEYS"},
        "retry": {"base_delay_s": 0.001, "max_delay_s": 0.01},
        "server": {
            "keepalive_interval_s": 0.05,
            "drain_timeout_s": 5,
            "upstream_transport": current_upstream_transport(),
        },
        "store": {"poll_interval_s": 0.05},
        "request_log": {"path": str(tmp_path / "requests.sqlite"), "flush_interval_s": 0.01},
    }
    for key, value in (extra or {}).items():
        raw[key] = {**raw[key], **value} if isinstance(raw.get(key), dict) else value
    return parse_config(raw, source="test config", env=env or {})


def proxy_env() -> dict[str, str]:
    return {"IAPO_TEST_KEYS": PROXY_KEY}


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """Run an ASGI app's lifespan (startup before, shutdown after) in this event loop."""
    inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def receive() -> dict[str, str]:
        return await inbox.get()

    async def send(message: dict[str, Any]) -> None:
        await outbox.put(message)

    running = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    )
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        running.cancel()
        raise RuntimeError(f"app failed to start: {started.get('message')}")
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await running


@contextlib.asynccontextmanager
async def proxy_client(
    config: ProxyConfig, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, ProxyService]]:
    """The proxy app in-process, in this event loop (lifespan included), through
    ``httpx.ASGITransport``; the upstream is reached over loopback."""
    app = create_app(config, rng=np.random.default_rng(0), env=env or proxy_env())
    transport = httpx.ASGITransport(app)
    async with (
        lifespan(app),
        httpx.AsyncClient(transport=transport, base_url="http://proxy.test", timeout=30) as client,
    ):
        yield client, app.state.service


@contextlib.asynccontextmanager
async def uvicorn_proxy(
    config: ProxyConfig, env: dict[str, str] | None = None, *, timeout_graceful_shutdown: float = 5
) -> AsyncIterator[tuple[str, ProxyService]]:
    """The proxy under a real uvicorn server on 127.0.0.1, in this event loop."""
    app = create_app(config, rng=np.random.default_rng(0), env=env or proxy_env())
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            lifespan="on",
            log_config=None,
            access_log=False,
            loop="asyncio",
            http=guarded_protocol(config.server),  # what ``iapo serve`` runs
            timeout_graceful_shutdown=timeout_graceful_shutdown,
        )
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="test-uvicorn")
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if serving.done():
                    serving.result()
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}", app.state.service
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 15)
        sock.close()


@contextlib.asynccontextmanager
async def fault_upstream(**plan_fields: Any) -> AsyncIterator[FaultUpstream]:
    from iapo.testing import FaultPlan

    async with FaultUpstream(FaultPlan(**plan_fields), rng=np.random.default_rng(0)) as upstream:
        yield upstream


def chat(content: str = "What is 6 times 7?", **fields: Any) -> dict[str, Any]:
    return {"model": "fault-model", "messages": [{"role": "user", "content": content}], **fields}


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of the /metrics text, or None if absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def assert_openai_error(
    response: Any, status: int | None = None, *, retry_header: bool = True
) -> dict[str, Any]:
    """The response is an error in the OpenAI shape (and has ``status`` if given).

    ``retry_header``: the proxy's own errors carry ``x-should-retry``; an upstream error
    passed through byte for byte carries whatever the upstream sent.
    """
    if status is not None:
        assert response.status_code == status, (response.status_code, response.text[:300])
    assert 400 <= response.status_code < 600
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["type"], str)
    if retry_header:
        status = response.status_code
        expected = "true" if status in (408, 409, 429) or status >= 500 else "false"
        assert response.headers.get("x-should-retry") == expected, response.headers
    return dict(error)


async def eventually(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Poll ``condition`` on this loop until true or ``seconds`` pass; its last value."""
    for _ in range(int(seconds / 0.01)):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()
