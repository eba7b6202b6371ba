"""Opening SQLite databases the one way iapo does: WAL, busy timeout, numbered migrations.

Several components may share one database file; each applies its own numbered list
of migrations under its own name (``component``), recorded in ``iapo_migrations``.

    db = await open_database("iapo.sqlite", "policies", POLICY_MIGRATIONS)
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import aiosqlite

from policies.errors import StoreError

__all__ = ["apply_migrations", "open_database"]

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000


async def apply_migrations(
    db: aiosqlite.Connection, component: str, migrations: Sequence[str]
) -> int:
    """Apply the migrations of ``component`` not yet applied; returns the schema version.

    ``migrations[i]`` is the SQL script of version ``i + 1``; never edit a released one,
    append a new one.
    """
    await db.execute(
        "CREATE TABLE IF NOT EXISTS iapo_migrations ("
        " component TEXT NOT NULL, version INTEGER NOT NULL, applied_at TEXT NOT NULL,"
        " PRIMARY KEY (component, version))"
    )
    async with db.execute(
        "SELECT COALESCE(MAX(version), 0) FROM iapo_migrations WHERE component = ?", (component,)
    ) as cursor:
        row = await cursor.fetchone()
    current = int(row[0]) if row else 0
    if current > len(migrations):
        raise StoreError(
            f"database schema of {component!r} is version {current}, newer than this "
            f"iapo knows ({len(migrations)}); upgrade iapo"
        )
    for version, script in enumerate(migrations[current:], start=current + 1):
        statements = (
            "BEGIN;\n"
            + script
            + (
                "\nINSERT INTO iapo_migrations VALUES "
                f"('{component}', {version}, strftime('%Y-%m-%dT%H:%M:%SZ','now'));\nCOMMIT;"
            )
        )
        try:
            await db.executescript(statements)
        except sqlite3.Error as exc:
            await db.rollback()
            raise StoreError(f"migration {component} #{version} failed: {exc}") from exc
        logger.info("applied migration %s #%d", component, version)
    return len(migrations)


async def open_database(
    path: str | Path, component: str, migrations: Sequence[str]
) -> aiosqlite.Connection:
    """Open (creating if needed) a SQLite database in WAL mode and migrate it."""
    target = str(path)
    if target != ":memory:":
        Path(target).parent.mkdir(parents=True, exist_ok=True)
    try:
        db = await aiosqlite.connect(target, timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open database {target}: {exc}") from exc
    try:
        await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = NORMAL")
        await db.execute("PRAGMA foreign_keys = ON")
        await apply_migrations(db, component, migrations)
    except sqlite3.DatabaseError as exc:
        await db.close()
        raise StoreError(f"cannot use database {target}: {exc}") from exc
    except BaseException:
        await db.close()
        raise
    return db
