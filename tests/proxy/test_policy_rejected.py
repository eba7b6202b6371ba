"""A rejected policy reload is counted, shown as a gauge, and makes /readyz say "degraded"
(still 200: the previous policy serves) until a good policy is the newest again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec

from policies import SqlitePolicyStore, encode_policy, save_policy
from tests.proxy.conftest import chat_body, make_config, make_policy, running_proxy
from tests.proxy.scripted import ScriptedUpstream

TASK = {"X-IAPO-Task": "math"}


async def wait_for(condition: object, seconds: float = 5.0) -> bool:
    for _ in range(int(seconds / 0.02)):
        if condition():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.02)
    return False


async def test_rejected_file_reload_is_counted_and_readyz_degrades_until_fixed(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    policy_file = Path(config.tasks[0].policy_file or "")
    async with running_proxy(config, ScriptedUpstream()) as (client, service):
        assert service.registry is not None
        ready = (await client.get("/readyz")).json()
        metrics = (await client.get("/metrics")).text
        assert ready["status"] == "ready"
        assert 'iapo_policy_rejected{task="math"} 0.0' in metrics

        policy_file.write_bytes(encode_policy(make_policy())[:40])  # noqa: ASYNC240
        assert await wait_for(lambda: "math" in service.registry.rejected)  # type: ignore[union-attr]
        await asyncio.sleep(0.2)  # several more polls of the same bad file: counted once
        degraded = await client.get("/readyz")
        served = await client.post("/v1/chat/completions", json=chat_body(), headers=TASK)
        metrics = (await client.get("/metrics")).text
        assert degraded.status_code == 200
        assert degraded.json()["status"] == "degraded"
        assert "not valid JSON" in degraded.json()["rejected"]["math"]
        assert served.status_code == 200
        assert 'iapo_policy_reloads_rejected_total{task="math"} 1.0' in metrics
        assert 'iapo_policy_rejected{task="math"} 1.0' in metrics

        save_policy(make_policy(ns={"standard": 2}), policy_file)
        assert await wait_for(lambda: not service.registry.rejected)  # type: ignore[union-attr]
        await asyncio.sleep(0.1)
        ready = (await client.get("/readyz")).json()
        metrics = (await client.get("/metrics")).text
    assert ready["status"] == "ready"
    assert 'iapo_policy_rejected{task="math"} 0.0' in metrics
    assert 'iapo_policy_reloads_rejected_total{task="math"} 1.0' in metrics


async def test_rolling_back_past_a_rejected_store_revision_clears_degraded(
    tmp_path: Path,
) -> None:
    store_path = tmp_path / "policies.sqlite"
    async with await SqlitePolicyStore.open(store_path) as store:
        await store.put(make_policy())
    config = make_config(
        tmp_path,
        extra={"store": {"path": str(store_path), "poll_interval_s": 0.02}},
        task={"tiers": {"premium": {"max_n": 4}}},
    )
    task = msgspec.structs.replace(config.tasks[0], policy_file=None)
    config = msgspec.structs.replace(config, tasks=(task,))
    async with running_proxy(config, ScriptedUpstream()) as (client, service):
        assert service.registry is not None
        async with await SqlitePolicyStore.open(store_path) as store:
            # valid as a policy, but it lacks the tier the config caps: the proxy refuses it
            await store.put(make_policy(ns={"economy": 1, "standard": 2}))
            assert await wait_for(lambda: "math" in service.registry.rejected)  # type: ignore[union-attr]
            assert (await client.get("/readyz")).json()["status"] == "degraded"
            await store.activate("math", 1)
        assert await wait_for(lambda: not service.registry.rejected)  # type: ignore[union-attr]
        ready = (await client.get("/readyz")).json()
    assert ready["status"] == "ready"
    assert ready["tasks"]["math"].startswith("1/")
