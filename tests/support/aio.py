"""Run a coroutine on a plain asyncio loop.

trio-asyncio, once imported by the ingest's tests, installs its own event-loop policy for
the whole process; the control plane's code runs on plain asyncio in production, and is
tested on it. Where the calling thread already runs a loop (Playwright's sync API keeps
one), the coroutine runs on a loop of its own in another thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    # As asyncio.run does, the loop is also made the thread's current one (anyio, under
    # httpx, looks it up that way on some paths).
    loop = asyncio.SelectorEventLoop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(coro)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def run(coro: Coroutine[Any, Any, T]) -> T:
    # (Not inside an `except` block: every exception the coroutine raises would carry the
    # handled one as its context, hiding the real cause.)
    if asyncio._get_running_loop() is None:
        return _run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(_run, coro).result()


def fetch(dsn: str, query: str, *args: Any) -> list[Any]:
    """One query on a fresh connection (for tests outside trio)."""
    import asyncpg

    async def go() -> list[Any]:
        conn = await asyncpg.connect(dsn)
        try:
            rows: list[Any] = await conn.fetch(query, *args)
            return rows
        finally:
            await conn.close()

    return run(go())
