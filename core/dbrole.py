"""Connections of the control plane and the alert worker run as ``lastseen_app``.

That role (migration 0004) may do what the application does and no more: in particular it
can append to the audit log but never change or delete an entry. Each connection a pool
hands out is switched to it (``SET ROLE`` on acquire, so a connection reset cannot undo
it). Where the role does not exist (a database whose migrating user may not create roles)
the login's own role is used, and startup logs that once.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

APP_ROLE = "lastseen_app"


async def can_use_app_role(conn: asyncpg.Connection) -> bool:
    available: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)"
        " AND pg_has_role(current_user, $1, 'MEMBER')",
        APP_ROLE,
    )
    return available


async def _as_app_role(conn: asyncpg.Connection) -> None:
    await conn.execute(f"SET ROLE {APP_ROLE}")


async def create_app_pool(dsn: str, **kwargs: Any) -> asyncpg.Pool:
    """An asyncpg pool whose connections run as lastseen_app where it exists."""
    conn = await asyncpg.connect(dsn)
    try:
        use_role = await can_use_app_role(conn)
    finally:
        await conn.close()
    if not use_role:
        log.warning("database role %s is missing: running as the login role", APP_ROLE)
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn, setup=_as_app_role if use_role else None, **kwargs
    )
    return pool
