"""LASTSEEN_DB_TIMEOUT_SECONDS bounds the control process's and the worker's database calls
too: a query stuck behind a lock is abandoned (the API answers 503, retry; the worker
retries next round), not when the lock goes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time

import asyncpg
import pytest

from ..support.aio import run
from ..support.serving import stop
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


def test_the_worker_gives_up_on_a_stuck_query_after_the_timeout_too(control: Control):
    """The worker's pool takes the same bound: an event read stuck behind a lock is
    abandoned (logged, retried next round) well before the old fixed 10 s."""
    with tempfile.TemporaryFile() as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "lastseen", "worker", "--admin-listen", "127.0.0.1:0"],
            env=control.env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:

            async def while_locked() -> float:
                conn = await asyncpg.connect(control.dsn)
                try:
                    async with conn.transaction():
                        await conn.execute("LOCK TABLE monitor_events IN ACCESS EXCLUSIVE MODE")
                        started = time.monotonic()
                        while time.monotonic() - started < 8:
                            out.seek(0)
                            if b"database unavailable (TimeoutError)" in out.read():
                                return time.monotonic() - started
                            await asyncio.sleep(0.1)
                        return float("inf")
                finally:
                    await conn.close()

            took = run(while_locked())
        finally:
            stop(worker)
    # 0.5 s (LASTSEEN_DB_TIMEOUT_SECONDS) plus a round or two of the worker's loop.
    assert took < 4, took
