"""PostgreSQL stopped or hung under the ingest: pings keep their 204, nothing is lost.

Each test runs its own embedded cluster, since it stops it.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator

import pytest
import trio

from core.pg import EmbeddedPostgres

from ..conftest import throwaway_dir
from .dbhelp import execute, fetch, ping, running, seed, wait_for


@pytest.fixture
def own_postgres() -> Iterator[EmbeddedPostgres]:
    if os.environ.get("LASTSEEN_DATABASE_URL"):
        pytest.skip("needs an embedded cluster it may stop")
    workdir = throwaway_dir("lastseen-outage-")
    pg = EmbeddedPostgres(workdir, durable=False)
    pg.start()
    try:
        yield pg
    finally:
        # force: the test may have restarted it from a worker thread, or stopped it
        pg.stop(force=True)
        shutil.rmtree(workdir, ignore_errors=True)


async def _migrated(pg: EmbeddedPostgres) -> str:
    from core.migrate import migrate

    from .dbhelp import with_conn

    await with_conn(pg.dsn, migrate)
    return pg.dsn


async def _last_seen_matches(ingest, dsn: str) -> bool:
    try:
        await ingest.flush_once()
        rows = await fetch(
            dsn, "SELECT monitor_id, extract(epoch FROM last_seen_at)::float8 FROM monitor_state"
        )
    except OSError:
        return False
    return all(
        r[1] is not None and abs(r[1] - ingest.table.get(r[0])["last_seen"]) < 1e-5 for r in rows
    )


async def test_postgres_stopped_then_started_loses_no_ping(own_postgres):
    dsn = await _migrated(own_postgres)
    monitors = await seed(dsn, 20)
    async with running(dsn, db_timeout=1.0) as ingest:
        for m in monitors:
            assert await ping(ingest.port, m.token) == 204
        await trio.to_thread.run_sync(own_postgres.stop)
        answered = []
        for _round in range(3):
            for m in monitors:
                answered.append(await ping(ingest.port, m.token))
            await trio.sleep(0.3)
        assert answered == [204] * len(answered)
        # (Not asserting on dirty_count here: a flush may hold the rows at this instant.)
        assert ingest.flush_failures > 0
        await trio.to_thread.run_sync(own_postgres.start)
        await wait_for(lambda: _last_seen_matches(ingest, dsn), within=15)
        assert await fetch(dsn, "SELECT * FROM monitor_events WHERE kind <> 'up'") == []


async def test_postgres_hung_blocks_nothing_and_loses_no_ping(own_postgres):
    dsn = await _migrated(own_postgres)
    monitors = await seed(dsn, 20)
    async with running(dsn, db_timeout=1.0) as ingest:
        for m in monitors:
            assert await ping(ingest.port, m.token) == 204
        await wait_for(lambda: _last_seen_matches(ingest, dsn))
        pids = own_postgres.pids()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            answered = []
            for _round in range(4):
                for m in monitors:
                    answered.append(await ping(ingest.port, m.token))
                await trio.sleep(0.5)
            assert answered == [204] * len(answered)
            # A flush against the hung server gave up within its timeout, keeping its rows.
            assert ingest.flush_failures > 0
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        await wait_for(lambda: _last_seen_matches(ingest, dsn), within=15)
        await execute(dsn, "SELECT 1")
        assert await fetch(dsn, "SELECT * FROM monitor_events WHERE kind <> 'up'") == []
