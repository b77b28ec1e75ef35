"""How much one organisation (or user) may create: bounds that keep one tenant, or one
leaked token, from filling the database. Each is a LASTSEEN_MAX_* variable (the limits
are in core.settings); the defaults fit a fleet (a million monitors) and stop a runaway
script.

Exceeding one answers 403 ``quota_exceeded``, naming the quota and the limit.
"""

from __future__ import annotations

from typing import Any

from .errors import ApiError


def exceeded(what: str, limit: int, scope: str = "per organisation") -> ApiError:
    return ApiError(403, "quota_exceeded", f"at most {limit:,} {what} {scope}")


LOCK = 0x71756F74  # with the organisation's id: one creation at a time per organisation
_TABLES = {"monitors", "channels", "status_pages"}


async def check(conn: Any, table: str, org_id: int, limit: int, what: str) -> None:
    """Refuse (403) when the organisation already has `limit` rows in `table`. Call inside
    the creating transaction: the lock makes concurrent creations take turns, so the
    limit holds exactly. The count stops at the limit, so it costs what the
    organisation already has, at most."""
    assert table in _TABLES
    await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", LOCK, org_id)
    have = await conn.fetchval(
        f"SELECT count(*) FROM (SELECT 1 FROM {table} WHERE org_id = $1 LIMIT $2) t",
        org_id, limit,
    )  # fmt: skip
    if have >= limit:
        raise exceeded(what, limit)
