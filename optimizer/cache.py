"""The sample cache: every live sample stored in SQLite, so a run resumes without paying twice.

Samples are keyed by (run key, prompt id, query id, draw index): the run key hashes
the task file, the dataset and the seed; the draw index numbers the samples of one
(prompt, query) in the order the run asks for them, so repeated samples stay distinct
and a re-run with the same arguments asks for the same keys. A Best-of-N sample is
stored as soon as it is paid for, and its reward scores once the reward service has
answered, with the service that scored it (NaN where it left the sample unscored).
Samples without scores from the task's reward service are scored, not paid for, again.

    cache = await SampleCache.open("samples.sqlite")
    hits = await cache.get(run_key, "step-by-step", "q17", range(0, 8))
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

import aiosqlite
import msgspec

from policies.errors import StoreError
from policies.sqlite import open_database

__all__ = ["CACHE_MIGRATIONS", "CachedSample", "SampleCache"]

CACHE_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE optimizer_samples (
        run_key TEXT NOT NULL,
        prompt_id TEXT NOT NULL,
        query_id TEXT NOT NULL,
        draw INTEGER NOT NULL,
        answer TEXT,
        text TEXT NOT NULL,
        rewards TEXT,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        cost REAL NOT NULL,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
        PRIMARY KEY (run_key, prompt_id, query_id, draw)
    );
    """,
    # Which reward service scored ``rewards`` (see ``CachedSample.reward_key``).
    "ALTER TABLE optimizer_samples ADD COLUMN reward_key TEXT;",
)


class CachedSample(msgspec.Struct, frozen=True):
    """One stored sample: its text, extracted answer, reward scores, usage and cost.

    ``reward_key`` names the reward service that gave ``rewards`` (kind, URL, model,
    objectives); scores from another service, or from before it was recorded, are stale.
    """

    text: str
    answer: str | None
    rewards: tuple[float, ...] | None
    prompt_tokens: int
    completion_tokens: int
    cost: float
    reward_key: str | None = None


class SampleCache:
    """SQLite (aiosqlite, WAL) store of samples; each ``put`` is committed at once."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        # One statement-and-commit at a time: concurrent pulls share this connection.
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | Path) -> SampleCache:
        return cls(await open_database(path, "optimizer_samples", CACHE_MIGRATIONS))

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> SampleCache:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def get(
        self, run_key: str, prompt_id: str, query_id: str, draws: Iterable[int]
    ) -> dict[int, CachedSample]:
        """The stored samples among ``draws``, by draw index."""
        wanted = sorted(set(draws))
        if not wanted:
            return {}
        try:
            async with (
                self._lock,
                self._db.execute(
                    "SELECT draw, text, answer, rewards, prompt_tokens, completion_tokens, cost, "
                    "reward_key "
                    "FROM optimizer_samples WHERE run_key = ? AND prompt_id = ? AND query_id = ? "
                    "AND draw BETWEEN ? AND ?",
                    (run_key, prompt_id, query_id, wanted[0], wanted[-1]),
                ) as cursor,
            ):
                rows = await cursor.fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the sample cache: {exc}") from exc
        keep = set(wanted)
        return {
            int(row[0]): CachedSample(
                text=str(row[1]),
                answer=row[2],
                rewards=None if row[3] is None else tuple(json.loads(row[3])),
                prompt_tokens=int(row[4]),
                completion_tokens=int(row[5]),
                cost=float(row[6]),
                reward_key=row[7],
            )
            for row in rows
            if int(row[0]) in keep
        }

    async def put(
        self,
        run_key: str,
        prompt_id: str,
        query_id: str,
        samples: Sequence[tuple[int, CachedSample]],
    ) -> None:
        """Store samples by draw index (a draw stored twice keeps its first value)."""
        try:
            async with self._lock:
                await self._put(run_key, prompt_id, query_id, samples)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write the sample cache: {exc}") from exc

    async def _put(
        self,
        run_key: str,
        prompt_id: str,
        query_id: str,
        samples: Sequence[tuple[int, CachedSample]],
    ) -> None:
        await self._db.executemany(
            "INSERT OR IGNORE INTO optimizer_samples (run_key, prompt_id, query_id, draw, "
            "text, answer, rewards, prompt_tokens, completion_tokens, cost, reward_key) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    run_key,
                    prompt_id,
                    query_id,
                    draw,
                    s.text,
                    s.answer,
                    None if s.rewards is None else json.dumps(list(s.rewards)),
                    s.prompt_tokens,
                    s.completion_tokens,
                    s.cost,
                    s.reward_key,
                )
                for draw, s in samples
            ],
        )
        await self._db.commit()

    async def set_rewards(
        self,
        run_key: str,
        prompt_id: str,
        query_id: str,
        reward_key: str,
        rewards: Sequence[tuple[int, tuple[float, ...]]],
    ) -> None:
        """Store the scores ``reward_key`` gave samples already stored (by draw index)."""
        try:
            async with self._lock:
                await self._db.executemany(
                    "UPDATE optimizer_samples SET rewards = ?, reward_key = ? WHERE run_key = ? "
                    "AND prompt_id = ? AND query_id = ? AND draw = ?",
                    [
                        (json.dumps(list(row)), reward_key, run_key, prompt_id, query_id, draw)
                        for draw, row in rewards
                    ],
                )
                await self._db.commit()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write the sample cache: {exc}") from exc

    async def count(self, run_key: str | None = None) -> int:
        """Samples stored (for one run key, or in all)."""
        query, params = "SELECT COUNT(*) FROM optimizer_samples", tuple[str, ...]()
        if run_key is not None:
            query, params = query + " WHERE run_key = ?", (run_key,)
        async with self._lock, self._db.execute(query, params) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0
