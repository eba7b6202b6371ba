"""Fixtures for proxy tests: policies, configs, and the proxy in front of a scripted upstream.

``running_proxy(config, upstream)`` serves the app in-process (litestar's
AsyncTestClient, lifespan included) with the upstream scripted through
``httpx.ASGITransport``; ``make_config`` builds a validated config around a policy file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest
from litestar.testing import AsyncTestClient

from policies import (
    BudgetSpent,
    ExtractorSpec,
    Policy,
    PromptCandidate,
    RewardSpec,
    TierPolicy,
    save_policy,
)
from proxy.app import create_app
from proxy.config import ProxyConfig, parse_config
from proxy.server import ServerThread
from proxy.service import ProxyService
from tests.conftest import UPSTREAM_TRANSPORTS, current_upstream_transport

__all__ = ["SYSTEM_PROMPT", "make_config", "make_policy", "running_proxy"]

SYSTEM_PROMPT = "Solve the problem. End with the final number."
UPSTREAM_URL = "http://upstream.test/v1"


def make_policy(
    task: str = "math",
    *,
    ns: dict[str, int] | None = None,
    strategy: str = "majority",
    prompt: PromptCandidate | None = None,
    reward: RewardSpec | None = None,
    weights: dict[str, dict[str, float]] | None = None,
    max_n: dict[str, int] | None = None,
) -> Policy:
    """A policy with tiers economy/standard/premium at N 1/4/8 unless told otherwise."""
    ns = ns or {"economy": 1, "standard": 4, "premium": 8}
    prompt = prompt or PromptCandidate("p-sys", SYSTEM_PROMPT)
    tiers = {
        name: TierPolicy(
            prompt=prompt,
            n=n,
            strategy=strategy,  # type: ignore[arg-type]
            expected_utility=0.5,
            interval=(0.4, 0.6),
            objective_weights=(weights or {}).get(name),
            max_n=(max_n or {}).get(name),
        )
        for name, n in ns.items()
    }
    return Policy(
        task=task,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        budget=BudgetSpent(planned=100, spent=100),
        tiers=tiers,
        extractor=ExtractorSpec(kind="last_number"),
        reward=reward,
    )


def make_config(
    tmp_path: Path,
    policy: Policy | None = None,
    *,
    supports_n: bool = True,
    max_retries: int = 0,
    auth: dict[str, Any] | None = None,
    task: dict[str, Any] | None = None,
    upstream: dict[str, Any] | None = None,
    server: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    request_log: bool = True,
    base_url: str = UPSTREAM_URL,
) -> ProxyConfig:
    """A config with upstream ``up`` and task ``math`` bound to ``policy`` (saved as a file)."""
    policy = policy or make_policy()
    policy_file = tmp_path / f"{policy.task}.policy.json"
    save_policy(policy, policy_file)
    raw: dict[str, Any] = {
        "upstreams": [
            {
                "name": "up",
                "base_url": base_url,
                "model": "up-model",
                "supports_n": supports_n,
                "max_retries": max_retries,
                "price_per_1k_prompt_tokens": 1.0,
                "price_per_1k_completion_tokens": 2.0,
                **(upstream or {}),
            }
        ],
        "tasks": [
            {"name": policy.task, "policy_file": str(policy_file), "upstream": "up", **(task or {})}
        ],
        "auth": auth if auth is not None else {"disabled": True},
        "retry": {"base_delay_s": 0.001, "max_delay_s": 0.01},
        "server": {"keepalive_interval_s": 0.05, **(server or {})},
        "store": {"poll_interval_s": 0.05},
        **(extra or {}),
    }
    if request_log:
        raw["request_log"] = {"path": str(tmp_path / "requests.sqlite"), "flush_interval_s": 0.01}
    return parse_config(raw, source="test config", env={})


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Every module here that runs the proxy runs it over both upstream transports.
    if "running_proxy" in vars(metafunc.module):
        metafunc.parametrize("upstream_transport", UPSTREAM_TRANSPORTS, indirect=True)


@asynccontextmanager
async def running_proxy(
    config: ProxyConfig,
    upstream: Any,
    *,
    env: dict[str, str] | None = None,
    transports: dict[str, httpx.AsyncBaseTransport] | None = None,
) -> AsyncIterator[tuple[AsyncTestClient[Any], ProxyService]]:
    """The proxy app served in-process in front of ``upstream`` (an ASGI app).

    Upstream ``up`` is served on a real socket on 127.0.0.1 and reached through the
    transport the test is parametrised with (``lean`` or ``httpx``), as in production;
    the reward service stays in-process.
    """
    all_transports: dict[str, httpx.AsyncBaseTransport] = {"reward": httpx.ASGITransport(upstream)}
    all_transports.update(transports or {})
    with ServerThread(upstream) as url:
        server = msgspec.structs.replace(
            config.server, upstream_transport=current_upstream_transport()
        )
        upstreams = tuple(
            msgspec.structs.replace(u, base_url=url + "/v1") if u.name == "up" else u
            for u in config.upstreams
        )
        config = msgspec.structs.replace(config, server=server, upstreams=upstreams)
        app = create_app(
            config, transports=all_transports, rng=np.random.default_rng(0), env=env or {}
        )
        service: ProxyService = app.state.service
        async with AsyncTestClient(app, base_url="http://proxy.test") as client:
            # the transport named is the one in use (LeanTransport is made per upstream)
            assert ("up" in service.lean) == (current_upstream_transport() == "lean")
            yield client, service


def chat_body(question: str = "What is 6 + 6?", **fields: Any) -> dict[str, Any]:
    return {"model": "math", "messages": [{"role": "user", "content": question}], **fields}
