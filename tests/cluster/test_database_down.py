"""PostgreSQL stopped under two ingest "hosts" (127.0.0.2-3), longer than a lease: pings
keep their 204 (answered from memory, handed between the hosts without the database),
nobody goes down, and when PostgreSQL is back every host renews its own shards under the
same epochs (the grace of migration 0010: nobody takes an expired lease first).

Default: a 7 s outage of a 3 s lease; LASTSEEN_SLOW=1: 60 s of the default 8 s lease."""

from __future__ import annotations

import os
import time
from collections import Counter

import asyncpg
import pytest
import trio

from core.seed import seed_monitors

from ..support.aio import run
from ..support.cluster import balanced, ingests, ping_all, wait_for
from ..support.outage import migrated

pytestmark = pytest.mark.faults
SLOW = bool(os.environ.get("LASTSEEN_SLOW"))
LEASE = 8.0 if SLOW else 3.0
OUTAGE = 60.0 if SLOW else 7.0
ROUND = 10.0 if SLOW else 5.0  # every monitor pinged once a round
MONITORS = 2_000


async def _leases(dsn: str) -> dict[int, tuple[str, int]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT shard, owner, epoch FROM shard_leases")
        return {r["shard"]: (r["owner"], r["epoch"]) for r in rows}
    finally:
        await conn.close()


async def _events(dsn: str) -> tuple[dict[str, int], int]:
    conn = await asyncpg.connect(dsn)
    try:
        events = dict(await conn.fetch("SELECT kind, count(*) FROM monitor_events GROUP BY 1"))
        most = await conn.fetchval(
            "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM monitor_events"
            " GROUP BY monitor_id, kind) c"
        )
        return events, most
    finally:
        await conn.close()


def test_postgres_down_longer_than_a_lease_changes_no_owner_and_no_answer(own_postgres, tmp_path):
    async def seed() -> list[str]:
        conn = await asyncpg.connect(dsn)
        try:
            fleet = await seed_monitors(conn, MONITORS, interval_sec=30, grace_sec=5)
        finally:
            await conn.close()
        return [m.token for m in fleet]

    dsn = trio.run(migrated, own_postgres)
    tokens = run(seed())
    env = {"LASTSEEN_LEASE_SECONDS": str(LEASE), "LASTSEEN_DB_TIMEOUT_SECONDS": "1"}
    with ingests(dsn, ["127.0.0.2", "127.0.0.3"], tmp_path, env=env) as procs:
        wait_for(lambda: balanced(procs), 20, "two hosts hold their share")
        before = run(_leases(dsn))
        statuses: Counter[int] = Counter()

        async def scenario() -> None:
            targets = [(p.host, p.port) for p in procs]
            done = trio.Event()
            async with trio.open_nursery() as nursery:

                async def load() -> None:
                    while not done.is_set():
                        statuses.update(await ping_all(targets, tokens, rate=MONITORS / ROUND))

                nursery.start_soon(load)
                await trio.sleep(2)
                await trio.to_thread.run_sync(own_postgres.stop)
                await trio.sleep(OUTAGE)
                await trio.to_thread.run_sync(own_postgres.start)
                await trio.sleep(2 * LEASE)  # renewals under PostgreSQL again
                done.set()

        trio.run(scenario)
        wait_for(lambda: all(p.health()["database"] == "up" for p in procs), 20, "reconnected")
        time.sleep(2)
        after = run(_leases(dsn))
        events, most = run(_events(dsn))
        shards = [p.shards() for p in procs]
    ok = statuses[204] / sum(statuses.values())
    assert ok >= 0.999, statuses
    assert after == before, "owners or epochs changed"
    assert events == {"up": MONITORS} and most == 1, events
    assert sorted(shards) == [512, 512]
    print(
        f"\nPostgreSQL down {OUTAGE:g} s under two hosts (lease {LEASE:g} s):"
        f" {sum(statuses.values()):,} pings, {ok:.2%} 204 {dict(statuses)}; every shard"
        f" kept its owner and epoch; only `up` events ({events})"
    )
