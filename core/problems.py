"""The one error shape of every answer lastseen gives, from any process:
``{"error": {"code", "message", "field"}}``; and what a lost database raises."""

from __future__ import annotations

import json
from typing import Any

import asyncpg


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field}}


def error_json(code: str, message: str, field: str | None = None) -> bytes:
    return json.dumps(error_body(code, message, field)).encode()


# The database is unreachable, or the connection was lost: retry later (503, a new
# connection), no bug of ours.
DATABASE_DOWN: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    TimeoutError,
)
# Anything a database call can fail with that is not a bug: the above, any error the
# server reports, and a connection left mid-operation by a call abandoned at its timeout
# (asyncpg says so with InternalClientError). Loops that retry catch this.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    *DATABASE_DOWN,
    asyncpg.PostgresError,
    asyncpg.InternalClientError,
)
