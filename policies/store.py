"""Where policies live: numbered revisions per task, one of them active.

The optimizer writes (``put``), the proxy reads (``active``). Two implementations
share one contract (and one test suite): :class:`MemoryPolicyStore` and
:class:`SqlitePolicyStore` (aiosqlite, WAL, numbered migrations).

    async with await SqlitePolicyStore.open("iapo.sqlite") as store:
        stored = await store.put(policy)            # revision 1, active
        (await store.active("math")).policy.tiers
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import aiosqlite
import msgspec

from policies.errors import PolicyNotFound
from policies.policy import Policy, decode_policy

__all__ = [
    "POLICY_MIGRATIONS",
    "MemoryPolicyStore",
    "PolicyStore",
    "SqlitePolicyStore",
    "StoredPolicy",
]

POLICY_MIGRATIONS: tuple[str, ...] = (
    # 1: policy revisions and the active revision per task
    """
    CREATE TABLE policies (
        task TEXT NOT NULL,
        revision INTEGER NOT NULL,
        digest TEXT NOT NULL,
        created_at TEXT NOT NULL,
        stored_at TEXT NOT NULL,
        body BLOB NOT NULL,
        PRIMARY KEY (task, revision)
    );
    CREATE TABLE active_policies (
        task TEXT PRIMARY KEY,
        revision INTEGER NOT NULL,
        activated_at TEXT NOT NULL,
        FOREIGN KEY (task, revision) REFERENCES policies (task, revision)
    );
    """,
)


class StoredPolicy(msgspec.Struct, frozen=True):
    """A policy with its place in the store."""

    task: str
    revision: int
    policy: Policy
    stored_at: datetime
    active: bool

    @property
    def label(self) -> str:
        """``math@3/1a2b3c4d5e6f``: task, revision and content digest."""
        return f"{self.task}@{self.revision}/{self.policy.digest}"


class PolicyStore(Protocol):
    async def put(self, policy: Policy, *, activate: bool = True) -> StoredPolicy:
        """Store ``policy`` as the task's next revision, active unless told otherwise."""

    async def active(self, task: str) -> StoredPolicy | None:
        """The active revision of ``task``, or None."""

    async def get(self, task: str, revision: int) -> StoredPolicy:
        """One revision; PolicyNotFound if absent."""

    async def activate(self, task: str, revision: int) -> StoredPolicy:
        """Make ``revision`` the active one (a rollback is an activate)."""

    async def history(self, task: str) -> list[StoredPolicy]:
        """All revisions of ``task``, newest first."""

    async def tasks(self) -> list[str]:
        """Tasks that have an active policy, sorted."""

    async def close(self) -> None: ...


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class _StoreContext:
    async def close(self) -> None:
        return None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class MemoryPolicyStore(_StoreContext):
    """A store in a dict: for tests and for serving policy files."""

    def __init__(self) -> None:
        self._revisions: dict[str, list[tuple[Policy, datetime]]] = {}
        self._active: dict[str, int] = {}

    def _stored(self, task: str, revision: int) -> StoredPolicy:
        try:
            policy, stored_at = self._revisions[task][revision - 1]
        except (KeyError, IndexError):
            raise PolicyNotFound(f"no policy revision {revision} for task {task!r}") from None
        if revision < 1:
            raise PolicyNotFound(f"no policy revision {revision} for task {task!r}")
        return StoredPolicy(task, revision, policy, stored_at, self._active.get(task) == revision)

    async def put(self, policy: Policy, *, activate: bool = True) -> StoredPolicy:
        revisions = self._revisions.setdefault(policy.task, [])
        revisions.append((policy, _now()))
        if activate:
            self._active[policy.task] = len(revisions)
        return self._stored(policy.task, len(revisions))

    async def active(self, task: str) -> StoredPolicy | None:
        revision = self._active.get(task)
        return None if revision is None else self._stored(task, revision)

    async def get(self, task: str, revision: int) -> StoredPolicy:
        return self._stored(task, revision)

    async def activate(self, task: str, revision: int) -> StoredPolicy:
        self._stored(task, revision)
        self._active[task] = revision
        return self._stored(task, revision)

    async def history(self, task: str) -> list[StoredPolicy]:
        count = len(self._revisions.get(task, []))
        return [self._stored(task, r) for r in range(count, 0, -1)]

    async def tasks(self) -> list[str]:
        return sorted(self._active)


class SqlitePolicyStore(_StoreContext):
    """Policies in a SQLite file, shared by the optimizer (writer) and proxies (readers)."""

    def __init__(self, db: aiosqlite.Connection, path: str) -> None:
        self._db = db
        self.path = path

    @classmethod
    async def open(cls, path: str | Path) -> SqlitePolicyStore:
        from policies.sqlite import open_database

        db = await open_database(path, "policies", POLICY_MIGRATIONS)
        return cls(db, str(path))

    async def close(self) -> None:
        await self._db.close()

    def _row(self, row: Sequence[Any], active_revision: int | None) -> StoredPolicy:
        task, revision, body, stored_at = row
        policy = decode_policy(body, source=f"{self.path}: {task}@{revision}")
        return StoredPolicy(
            str(task),
            int(revision),
            policy,
            datetime.fromisoformat(str(stored_at)),
            revision == active_revision,
        )

    async def _active_revision(self, task: str) -> int | None:
        async with self._db.execute(
            "SELECT revision FROM active_policies WHERE task = ?", (task,)
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else int(row[0])

    async def put(self, policy: Policy, *, activate: bool = True) -> StoredPolicy:
        body = msgspec.json.encode(policy)
        stored_at = _now().isoformat()
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            async with self._db.execute(
                "SELECT COALESCE(MAX(revision), 0) + 1 FROM policies WHERE task = ?",
                (policy.task,),
            ) as cursor:
                row = await cursor.fetchone()
            revision = int(row[0]) if row else 1
            await self._db.execute(
                "INSERT INTO policies (task, revision, digest, created_at, stored_at, body)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    policy.task,
                    revision,
                    policy.digest,
                    policy.created_at.isoformat(),
                    stored_at,
                    body,
                ),
            )
            if activate:
                await self._set_active(policy.task, revision)
            await self._db.commit()
        except BaseException:
            await self._db.rollback()
            raise
        return await self.get(policy.task, revision)

    async def _set_active(self, task: str, revision: int) -> None:
        await self._db.execute(
            "INSERT INTO active_policies (task, revision, activated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (task) DO UPDATE SET revision = excluded.revision,"
            " activated_at = excluded.activated_at",
            (task, revision, _now().isoformat()),
        )

    async def active(self, task: str) -> StoredPolicy | None:
        async with self._db.execute(
            "SELECT p.task, p.revision, p.body, p.stored_at FROM active_policies a"
            " JOIN policies p ON p.task = a.task AND p.revision = a.revision WHERE a.task = ?",
            (task,),
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else self._row(row, int(row[1]))

    async def get(self, task: str, revision: int) -> StoredPolicy:
        async with self._db.execute(
            "SELECT task, revision, body, stored_at FROM policies WHERE task = ? AND revision = ?",
            (task, revision),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            raise PolicyNotFound(f"no policy revision {revision} for task {task!r}")
        return self._row(row, await self._active_revision(task))

    async def activate(self, task: str, revision: int) -> StoredPolicy:
        await self.get(task, revision)
        await self._set_active(task, revision)
        await self._db.commit()
        return await self.get(task, revision)

    async def history(self, task: str) -> list[StoredPolicy]:
        active_revision = await self._active_revision(task)
        async with self._db.execute(
            "SELECT task, revision, body, stored_at FROM policies WHERE task = ?"
            " ORDER BY revision DESC",
            (task,),
        ) as cursor:
            rows = await cursor.fetchall()
        return [self._row(row, active_revision) for row in rows]

    async def tasks(self) -> list[str]:
        async with self._db.execute("SELECT task FROM active_policies ORDER BY task") as cursor:
            rows = await cursor.fetchall()
        return [str(row[0]) for row in rows]
