"""The ingest's seam between trio and asyncpg (which runs on asyncio, through trio-asyncio).

Every database call goes through ``Database.call``: run on the process's trio-asyncio
loop, bounded by a timeout (the call's own ``limit`` or the configured one plus a
second), and typed by what the call returns. ``DB_ERRORS`` is what a lost, hung or
refused database raises; callers catch it, keep their state, and try again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import trio
import trio_asyncio

from core.problems import DATABASE_ERRORS

from . import store

T = TypeVar("T")

# What a database call can fail with (core.problems), and trio's own timeout of it. A
# call abandoned at its timeout can leave the connection mid-operation (seen with
# PostgreSQL stopped under the follower): the connection is dropped and a new one made,
# like after any other failure.
DB_ERRORS: tuple[type[BaseException], ...] = (*DATABASE_ERRORS, trio.TooSlowError)


def why(exc: BaseException) -> str:
    """An error as its type and SQLSTATE: asyncpg's text can quote SQL parameters."""
    code = getattr(exc, "sqlstate", None)
    return f"{type(exc).__name__}{f' {code}' if code else ''}"


class Database:
    """Database calls from trio; `loop` is set once the trio-asyncio loop is open."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self.loop: Any = None  # database calls may come from any task

    async def call(
        self, fn: Callable[..., Awaitable[T]], *args: Any, limit: float | None = None
    ) -> T:
        """`await fn(*args)` on asyncio, bounded by `limit` or the timeout."""
        with trio.fail_after(limit or self.timeout + 1):
            result: T = await trio_asyncio.aio_as_trio(fn, loop=self.loop)(*args)
            return result

    async def connect(self, application: str) -> asyncpg.Connection:
        return await self.call(store.connect, self.url, self.timeout, application)

    @staticmethod
    def drop(conn: asyncpg.Connection | None) -> None:
        if conn is not None:
            conn.terminate()
