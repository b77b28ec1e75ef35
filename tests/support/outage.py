"""The migrated database of a test's own PostgreSQL (the `own_postgres` fixture)."""

from __future__ import annotations

from core.pg import EmbeddedPostgres


async def migrated(pg: EmbeddedPostgres) -> str:
    from core.migrate import migrate

    from ..support.dbhelp import with_conn

    await with_conn(pg.dsn, migrate)
    return pg.dsn
