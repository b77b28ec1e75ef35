"""LASTSEEN_DB_TIMEOUT_SECONDS bounds the control process's database calls too: a query
stuck behind a lock is abandoned and the API answers 503 (retry), not when the lock goes."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from ..support.aio import run
from .conftest import Control


@pytest.fixture(scope="module")
def control_env() -> dict[str, str]:
    return {"LASTSEEN_DB_TIMEOUT_SECONDS": "0.5"}


def test_a_query_stuck_behind_a_lock_is_abandoned_after_the_timeout(control: Control):
    token = control.bootstrap("timeouts", "owner@timeouts.test", "owner")
    with control.client(token) as client:
        assert client.get("/monitors").status_code == 200

        async def while_locked() -> tuple[int, str, float]:
            conn = await asyncpg.connect(control.dsn)
            try:
                async with conn.transaction():
                    await conn.execute("LOCK TABLE monitors IN ACCESS EXCLUSIVE MODE")
                    started = time.monotonic()
                    r = await asyncio.to_thread(client.get, "/monitors")
                    return r.status_code, r.json()["error"]["code"], time.monotonic() - started
            finally:
                await conn.close()

        status, code, took = run(while_locked())
        # The lock was held until the answer came: only the timeout could end the wait
        # (the client's own timeout is 10 s; the default LASTSEEN_DB_TIMEOUT is 5 s).
        assert (status, code) == (503, "database_unavailable")
        assert took < 4, took
        assert client.get("/monitors").status_code == 200  # and the pool recovered
