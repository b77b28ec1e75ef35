"""The schema: migrations apply once, and the audit log only ever grows."""

from __future__ import annotations

import asyncpg
import pytest

from core.dbrole import APP_ROLE, create_app_pool
from core.migrate import migrate, migrations

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
