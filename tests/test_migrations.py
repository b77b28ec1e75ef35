"""The schema: migrations apply once, and the audit log only ever grows."""

from __future__ import annotations

import asyncpg
import pytest

from core.dbrole import APP_ROLE, create_app_pool
from core.migrate import NewerDatabase, migrate, migrations

from .support.aio import run
from .support.dbhelp import execute, fetch, with_conn


async def test_migrations_are_applied_once_each(database_url):
    assert await with_conn(database_url, migrate) == []  # the template has them all
    rows = await fetch(database_url, "SELECT version FROM schema_migrations ORDER BY version")
    assert [r[0] for r in rows] == [m.version for m in migrations()]


@pytest.mark.parametrize(
    "statement",
    ["UPDATE audit_log SET action = 'X'", "DELETE FROM audit_log", "TRUNCATE audit_log"],
)
async def test_the_audit_log_refuses_changes_even_from_a_superuser(database_url, statement):
    await execute(database_url, "INSERT INTO audit_log (org_id, action) VALUES (1, 'A')")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await execute(database_url, statement)
    assert [r[0] for r in await fetch(database_url, "SELECT action FROM audit_log")] == ["A"]


@pytest.mark.parametrize(
    "statement",
    ["UPDATE audit_log SET action = 'X'", "DELETE FROM audit_log", "TRUNCATE audit_log"],
)
def test_the_application_role_may_append_to_the_audit_log_and_nothing_more(database_url, statement):
    async def go() -> list[str]:
        pool = await create_app_pool(database_url, min_size=1, max_size=1)
        try:
            async with pool.acquire() as conn:
                assert await conn.fetchval("SELECT current_user") == APP_ROLE
                await conn.execute("INSERT INTO audit_log (org_id, action) VALUES (1, 'A')")
                # Refused by the grants, before the trigger is reached.
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                    await conn.execute(statement)
            async with pool.acquire() as conn:  # a reset connection is still the app's
                assert await conn.fetchval("SELECT current_user") == APP_ROLE
                return [r[0] for r in await conn.fetch("SELECT action FROM audit_log")]
        finally:
            await pool.close()

    assert run(go()) == ["A"]


def test_a_database_newer_than_the_code_is_refused_in_one_line(database_url):
    """An older lastseen started on a database a newer one migrated (a rollback without
    the backup): it must not run against a schema it does not know."""
    import os
    import subprocess
    import sys

    run(_newer(database_url))
    done = subprocess.run(
        [sys.executable, "-m", "lastseen", "migrate"],
        env={**os.environ, "LASTSEEN_DATABASE_URL": database_url},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    newest = max(m.version for m in migrations())
    assert done.stderr.strip() == (
        f"lastseen: the database is at schema version 9999, newer than this lastseen's "
        f"({newest}): run the lastseen that migrated it (or a newer one), or restore a backup"
        " made before the upgrade (README, Upgrading)"
    )


async def _newer(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("INSERT INTO schema_migrations (version, name) VALUES (9999, 'x.sql')")
        with pytest.raises(NewerDatabase):
            await migrate(conn)
    finally:
        await conn.close()
