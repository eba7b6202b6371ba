"""The request log: one SQLite row per request, written in batches off the request path.

A request only appends a :class:`RequestRecord` to an in-memory queue (no I/O, no
await); a background task writes batches with one ``executemany`` and one commit
through aiosqlite (WAL, busy timeout). ``close`` flushes what is queued. The columns are
``RequestRecord``'s fields (README, "Serve a policy"); a database made by an older iapo
gains the new columns by migration when opened. If the disk
cannot keep up the queue is bounded and the overflow is dropped and counted, never
allowed to slow requests down. A batch that fails is written again row by row, so one
bad row never takes the others with it; a row that cannot be written is counted
(``iapo_request_log_lost_total``). Message content is stored only if ``log_content``.

    log = await RequestLog.open(config.request_log, metrics)
    log.record(RequestRecord(task="math", tier="standard", ...))
    await log.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import aiosqlite
import msgspec

from policies import StopKind, open_database
from proxy.config import RequestLogConfig
from proxy.metrics import ProxyMetrics

__all__ = ["REQUEST_LOG_MIGRATIONS", "RequestLog", "RequestRecord"]

logger = logging.getLogger(__name__)

REQUEST_LOG_MIGRATIONS: tuple[str, ...] = (
    # 1: one row per chat completion request
    """
    CREATE TABLE request_log (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        task TEXT NOT NULL,
        tier TEXT,
        strategy TEXT,
        policy TEXT,
        n_policy INTEGER,
        n_served INTEGER,
        samples_launched INTEGER NOT NULL,
        samples_used INTEGER NOT NULL,
        samples_failed INTEGER NOT NULL,
        samples_cancelled INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        cost REAL NOT NULL,
        agreement REAL,
        score REAL,
        early_stopped INTEGER NOT NULL,
        latency_s REAL NOT NULL,
        status INTEGER NOT NULL,
        error TEXT,
        content TEXT
    );
    CREATE INDEX request_log_task_ts ON request_log (task, ts);
    """,
    # 2: how sampling stopped (full | exact | confident | threshold); NULL on older rows
    "ALTER TABLE request_log ADD COLUMN stopped TEXT;",
)

_COLUMNS = (
    "ts, task, tier, strategy, policy, n_policy, n_served, samples_launched, samples_used,"
    " samples_failed, samples_cancelled, prompt_tokens, completion_tokens, cost, agreement,"
    " score, early_stopped, latency_s, status, error, content, stopped"
)
_INSERT = f"INSERT INTO request_log ({_COLUMNS}) VALUES ({', '.join('?' * 22)})"


class RequestRecord(msgspec.Struct, frozen=True, array_like=True):
    """What one request did and spent. ``content`` is set only when log_content is on;
    ``stopped``: how its sampling stopped (``policies.StopKind``; None if it drew nothing).
    Fields are in column order (``_COLUMNS``): new ones go last."""

    ts: float
    task: str
    tier: str | None = None
    strategy: str | None = None
    policy: str | None = None
    n_policy: int | None = None
    n_served: int | None = None
    samples_launched: int = 0
    samples_used: int = 0
    samples_failed: int = 0
    samples_cancelled: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    agreement: float | None = None
    score: float | None = None
    early_stopped: bool = False
    latency_s: float = 0.0
    status: int = 200
    error: str | None = None
    content: str | None = None
    stopped: StopKind | None = None


class RequestLog:
    """The batched writer; ``record`` never blocks, ``close`` flushes."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        config: RequestLogConfig,
        metrics: ProxyMetrics | None = None,
    ) -> None:
        self._db = db
        self.config = config
        self._queue: asyncio.Queue[RequestRecord | None] = asyncio.Queue(config.max_queue)
        self.dropped = 0
        self.failed = 0
        self.written = 0
        lost = metrics.request_log_lost if metrics is not None else None
        self._lost = {r: lost.labels(r) for r in ("dropped", "failed")} if lost else None
        self._task = asyncio.create_task(self._run(), name="iapo-request-log")

    @classmethod
    async def open(
        cls, config: RequestLogConfig, metrics: ProxyMetrics | None = None
    ) -> RequestLog:
        if config.path is None:
            raise ValueError("request_log.path is not set")
        db = await open_database(config.path, "request_log", REQUEST_LOG_MIGRATIONS)
        return cls(db, config, metrics)

    def _count_lost(self, reason: str, rows: int = 1) -> None:
        if self._lost is not None:
            self._lost[reason].inc(rows)

    @property
    def log_content(self) -> bool:
        return self.config.log_content

    def record(self, record: RequestRecord) -> None:
        """Queue one row (dropped, and counted, if the queue is full)."""
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped += 1
            self._count_lost("dropped")
            if self.dropped in (1, 100) or self.dropped % 10_000 == 0:
                logger.error("request log is behind; %d rows dropped so far", self.dropped)

    def _batch(self, first: RequestRecord) -> tuple[list[tuple[object, ...]], bool]:
        """Rows for one write, and whether the stop marker was reached."""
        rows = [msgspec.structs.astuple(first)]
        while len(rows) < self.config.batch_size:
            try:
                record = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            if record is None:
                return rows, True
            rows.append(msgspec.structs.astuple(record))
        return rows, False

    async def _write(self, rows: list[tuple[object, ...]]) -> None:
        if await self._insert(rows):
            return
        # One bad row (a value SQLite cannot store) fails the whole batch: write the rows
        # one by one so only the bad one is lost.
        for row in rows:
            if not await self._insert([row], log=False):
                self.failed += 1
                self._count_lost("failed")
                if self.failed in (1, 100) or self.failed % 10_000 == 0:
                    logger.error("request log: a row could not be written (%d so far)", self.failed)

    async def _insert(self, rows: list[tuple[object, ...]], *, log: bool = True) -> bool:
        """Insert and commit ``rows`` as one transaction; False (rolled back) if that failed."""
        try:
            await self._db.executemany(_INSERT, rows)
            await self._db.commit()
        except Exception:
            if log:
                logger.warning("request log: a batch of %d rows failed", len(rows), exc_info=True)
            with contextlib.suppress(Exception):
                await self._db.rollback()  # no half batch rides along with the next commit
            return False
        self.written += len(rows)
        return True

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                return
            if self._queue.qsize() < self.config.batch_size:
                # Let a burst accumulate so one commit covers many requests.
                await asyncio.sleep(self.config.flush_interval_s)
            rows, stop = self._batch(first)
            await self._write(rows)
            if stop:
                return

    async def close(self) -> None:
        """Write everything queued, stop the writer, close the database."""
        if not self._task.done():
            await self._queue.put(None)
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._db.close()
        logger.info(
            "request log closed: %d rows written, %d dropped, %d failed",
            self.written,
            self.dropped,
            self.failed,
        )


def now() -> float:
    """Wall-clock seconds, the ``ts`` of a record."""
    return time.time()
