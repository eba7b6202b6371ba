"""One contract suite for every PolicyStore implementation."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from policies import (
    POLICY_MIGRATIONS,
    MemoryPolicyStore,
    PolicyError,
    PolicyNotFound,
    PolicyStore,
    SqlitePolicyStore,
    StoreError,
    open_database,
)
from tests.policies.test_policy import make_policy


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[PolicyStore]:
    if request.param == "memory":
        yield MemoryPolicyStore()
    else:
        sqlite_store = await SqlitePolicyStore.open(tmp_path / "iapo.sqlite")
        yield sqlite_store
        await sqlite_store.close()


async def test_empty_store(store: PolicyStore) -> None:
    assert await store.tasks() == []
    assert await store.active("math") is None
    assert await store.history("math") == []
    with pytest.raises(PolicyNotFound):
        await store.get("math", 1)


async def test_put_assigns_revisions_and_activates(store: PolicyStore) -> None:
    first = await store.put(make_policy(n_premium=8))
    second = await store.put(make_policy(n_premium=16))
    assert (first.revision, second.revision) == (1, 2)
    active = await store.active("math")
    assert active is not None
    assert active.revision == 2
    assert active.active
    assert active.policy == make_policy(n_premium=16)
    assert active.label == f"math@2/{make_policy(n_premium=16).digest}"
    assert [s.revision for s in await store.history("math")] == [2, 1]
    assert [s.active for s in await store.history("math")] == [True, False]


async def test_put_without_activate_and_rollback(store: PolicyStore) -> None:
    await store.put(make_policy(n_premium=8))
    staged = await store.put(make_policy(n_premium=32), activate=False)
    assert not staged.active
    active = await store.active("math")
    assert active is not None
    assert active.revision == 1
    await store.activate("math", 2)
    active = await store.active("math")
    assert active is not None
    assert active.policy.tiers["premium"].n == 32
    with pytest.raises(PolicyNotFound):
        await store.activate("math", 9)


async def test_tasks_are_separate(store: PolicyStore) -> None:
    await store.put(make_policy("math"))
    await store.put(make_policy("code"))
    assert await store.tasks() == ["code", "math"]
    code = await store.get("code", 1)
    assert code.policy.task == "code"


async def test_sqlite_store_persists_across_connections(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    async with await SqlitePolicyStore.open(path) as writer:
        await writer.put(make_policy())
    async with await SqlitePolicyStore.open(path) as reader:
        active = await reader.active("math")
        assert active is not None
        assert active.policy == make_policy()


async def test_migration_from_empty_database(tmp_path: Path) -> None:
    path = tmp_path / "empty.sqlite"
    sqlite3.connect(path).close()  # an empty file, as a user might create
    db = await open_database(path, "policies", POLICY_MIGRATIONS)
    async with db.execute("PRAGMA journal_mode") as cursor:
        assert (await cursor.fetchone()) == ("wal",)
    async with db.execute("SELECT component, version FROM iapo_migrations") as cursor:
        assert await cursor.fetchall() == [("policies", 1)]
    await db.close()
    # re-opening applies nothing twice
    db = await open_database(path, "policies", POLICY_MIGRATIONS)
    async with db.execute("SELECT COUNT(*) FROM iapo_migrations") as cursor:
        assert (await cursor.fetchone()) == (1,)
    await db.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite"
    db = await open_database(path, "policies", (*POLICY_MIGRATIONS, "CREATE TABLE later (x);"))
    await db.close()
    with pytest.raises(StoreError, match="newer than this iapo knows"):
        await open_database(path, "policies", POLICY_MIGRATIONS)


async def test_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot use database"):
        await SqlitePolicyStore.open(path)


async def test_corrupt_stored_body_is_a_policy_error(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.sqlite"
    async with await SqlitePolicyStore.open(path) as store:
        await store.put(make_policy())
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE policies SET body = ?", (b'{"task": "math"}',))
    async with await SqlitePolicyStore.open(path) as store:
        with pytest.raises(PolicyError, match="math@1"):
            await store.active("math")
