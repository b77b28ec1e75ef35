"""The schema: migrations apply once, and the audit log only ever grows."""

from __future__ import annotations

import asyncpg
import pytest

from core.migrate import migrate, migrations

from .ingest.dbhelp import execute, fetch, with_conn


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
