"""Numbered SQL migrations (core/migrations/NNNN_name.sql), applied in order, once each.

Each file runs in its own transaction under an advisory lock, so concurrent starts
(`lastseen serve` and a `lastseen migrate` racing) apply every file exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x6C617374  # "last"
_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")


class NewerDatabase(RuntimeError):
    """The database was migrated by a newer lastseen: this one must not touch it."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.fullmatch(path.name)
        if match is None:
            raise ValueError(f"migration file name not of the form NNNN_name.sql: {path.name}")
        found.append(Migration(int(match.group(1)), path.name, path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError("two migrations share a version number")
    return found


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply the migrations this database lacks; returns the names applied."""
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
    known = migrations()
    newest = max(m.version for m in known)
    found = await conn.fetchval("SELECT max(version) FROM schema_migrations")
    if found is not None and found > newest:
        raise NewerDatabase(
            f"the database is at schema version {found}, newer than this lastseen's "
            f"({newest}): run the lastseen that migrated it (or a newer one), or restore a "
            "backup made before the upgrade (README, Upgrading)"
        )
    for migration in known:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
            done = await conn.fetchval(
                "SELECT 1 FROM schema_migrations WHERE version = $1", migration.version
            )
            if done:
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            applied.append(migration.name)
            log.info("applied migration %s", migration.name)
    return applied


def migrate_database(dsn: str) -> list[str]:
    """Connect to `dsn`, apply what is missing, disconnect (blocking; not in an event loop)."""

    async def go() -> list[str]:
        conn = await asyncpg.connect(dsn, timeout=30)
        try:
            return await migrate(conn)
        finally:
            await conn.close()

    return asyncio.run(go())
