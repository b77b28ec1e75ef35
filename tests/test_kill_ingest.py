"""Fault 1: `kill -9` the ingest of a running `lastseen serve` under load.

A load generator pings every monitor at random over keep-alive connections and records
each 204. Measured: how long until pings are answered again, and, once it is back, how far
PostgreSQL's last-seen trails the last acknowledged ping of each monitor (at most one
flush interval may be lost: what was answered but not yet written when the process
died). No monitor may go down and no incident may open, except one that really stopped
pinging (interval 30 s, grace 0, pinged once before the load): after the restart it must
still alert, no earlier than its deadline and within 3 s of it (a deadline the restart
sets at interval + grace after it, so about 30 s after the kill). 10,000 monitors for
8 s; with LASTSEEN_SLOW=1, 100,000 monitors for 30 s.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import defaultdict

import asyncpg
import pytest
import trio

from core.seed import seed_monitors

from .support.aio import run
from .support.serving import serving

pytestmark = pytest.mark.faults
SLOW = bool(os.environ.get("LASTSEEN_SLOW"))
MONITORS = 100_000 if SLOW else 10_000
SECONDS = 30.0 if SLOW else 8.0
CONNECTIONS = 16
FLUSH_INTERVAL = 1.0
# A flush starts one interval after the previous one ended: allow for its own duration.
FLUSH_SLACK = 0.5


def ingest_pid(port: int) -> int:
    """The pid of the `lastseen ingest` listening on `port` (from /proc: `ps` truncates)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"ingest" in argv and f"127.0.0.1:{port}".encode() in argv and b"lastseen" in argv:
            return int(entry)
    raise AssertionError("no ingest process")


def test_kill_9_under_load_loses_at_most_one_flush_and_alerts_nobody(database_url, tmp_path):
    async def setup():
        conn = await asyncpg.connect(database_url)
        try:
            fleet = await seed_monitors(conn, MONITORS, interval_sec=30, grace_sec=60)
            [dead] = await seed_monitors(conn, 1, interval_sec=30, grace_sec=0, org="dead")
            return fleet, dead
        finally:
            await conn.close()

    monitors, dead = run(setup())
    acked: dict[int, float] = {}  # monitor id -> wall time of its last 204
    # Every 204 per monitor: (sent, answered), wall clock.
    history: dict[int, list[tuple[float, float]]] = defaultdict(list)
    failures = 0
    gap: list[float] = []

    async def load(port: int, until: float, killed_at: list[float]) -> None:
        nonlocal failures
        rng = random.Random()
        request_for = {
            m.id: f"POST /api/v1/heartbeats/{m.token} HTTP/1.1\r\nHost: h\r\n\r\n".encode()
            for m in monitors
        }
        ids = list(request_for)

        async def one_connection() -> None:
            nonlocal failures
            while trio.current_time() < until:
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                except OSError:
                    failures += 1
                    await trio.sleep(0.05)
                    continue
                async with stream:
                    try:
                        while trio.current_time() < until:
                            monitor_id = rng.choice(ids)
                            sent = time.time()
                            await stream.send_all(request_for[monitor_id])
                            answer = b""
                            while b"\r\n\r\n" not in answer:
                                chunk = await stream.receive_some()
                                if not chunk:
                                    raise trio.BrokenResourceError
                                answer += chunk
                            if answer.startswith(b"HTTP/1.1 204"):
                                now = time.time()
                                acked[monitor_id] = now
                                history[monitor_id].append((sent, now))
                                # Sent after the kill: answered by the new ingest.
                                if killed_at and sent > killed_at[0] and not gap:
                                    gap.append(now - killed_at[0])
                            await trio.sleep(CONNECTIONS / 2000)  # about 2,000 pings/s in all
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        failures += 1

        async with trio.open_nursery() as nursery:
            for _ in range(CONNECTIONS):
                nursery.start_soon(one_connection)

    with serving(database_url, tmp_path) as served:
        port = int(served.origin.rsplit(":", 1)[1])
        killed_at: list[float] = []
        before_kill: dict[int, float] = {}

        async def scenario() -> None:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(
                    f"POST /api/v1/heartbeats/{dead.token} HTTP/1.1\r\nHost: h\r\n\r\n".encode()
                )
                assert (await stream.receive_some()).startswith(b"HTTP/1.1 204")
            async with trio.open_nursery() as nursery:
                end = trio.current_time() + SECONDS
                nursery.start_soon(load, port, end, killed_at)
                await trio.sleep(SECONDS / 3)
                before_kill.update(acked)
                pid = ingest_pid(port)
                os.kill(pid, signal.SIGKILL)
                killed_at.append(time.time())

        trio.run(scenario)
        time.sleep(FLUSH_INTERVAL * 2.5)  # the restarted ingest flushes what it answered

        async def rows():
            conn = await asyncpg.connect(database_url)
            try:
                seen = await conn.fetch(
                    "SELECT monitor_id, extract(epoch FROM last_seen_at)::float8 AS seen, state"
                    " FROM monitor_state"
                )
                downs = await conn.fetchval(
                    "SELECT count(*) FROM monitor_events WHERE kind IN ('down', 'incident_opened')"
                    " AND monitor_id <> $1",
                    dead.id,
                )
                incidents = await conn.fetchval(
                    "SELECT count(*) FROM incidents WHERE monitor_id <> $1", dead.id
                )
                return seen, downs, incidents
            finally:
                await conn.close()

        seen, downs, incidents = run(rows())
        seen = [r for r in seen if r["monitor_id"] != dead.id]

        async def dead_incident() -> float | None:
            conn = await asyncpg.connect(database_url)
            try:
                opened = await conn.fetchval(
                    "SELECT extract(epoch FROM opened_at)::float8 FROM incidents"
                    " WHERE monitor_id = $1",
                    dead.id,
                )
                return float(opened) if opened is not None else None
            finally:
                await conn.close()

        assert gap, "pings never came back after the kill"
        back = killed_at[0] + gap[0]  # answering again: the restart was before this
        opened = None
        while opened is None and time.time() < back + 30 + 3 + 10:
            opened = run(dead_incident())
            time.sleep(0.2)
    # The restart set the dead monitor's deadline at 30 s after it started: after the
    # kill, before it answered again.
    assert opened is not None, "the monitor that stopped pinging never alerted"
    assert killed_at[0] + 30 <= opened <= back + 30 + 3, (
        opened - killed_at[0],
        back - killed_at[0],
    )
    stored = {r["monitor_id"]: r["seen"] for r in seen}
    assert gap, "pings never came back after the kill"
    # Pinged after the restart: every acknowledged ping is in PostgreSQL (to the clock's
    # precision). Before the kill: everything acknowledged more than one flush interval
    # before it is there; only the last interval's pings may be lost. The ingest stamps a
    # ping when it reads it, between its sending and its answer (which a loaded machine
    # may deliver 200 ms later): a stored time at least the ping's sending time is that
    # ping or a later one (a connection's pings go one after the other).
    kill = killed_at[0]
    lost = 0
    for monitor_id, pings in history.items():
        db = stored.get(monitor_id) or 0.0
        sent, answered = pings[-1]
        if sent > kill:
            assert db >= sent - 0.05, (monitor_id, sent - kill, answered - kill, db - kill)
            continue
        safe = [p for p in pings if p[1] <= kill - FLUSH_INTERVAL - FLUSH_SLACK]
        if safe:
            assert db >= safe[-1][0] - 0.05, (monitor_id, safe[-1][0] - kill, db - kill)
        lost += db < sent - 0.05
    assert downs == 0 and incidents == 0
    assert {r["state"] for r in seen} <= {"up", "pending"}
    print(
        f"\nkill -9 under load ({MONITORS:,} monitors, {len(acked):,} pinged): answering again"
        f" after {gap[0]:.2f} s; {len(before_kill):,} pinged before the kill,"
        f" {lost:,} of them lost their last ping (answered in the last flush interval);"
        f" {failures} failed requests while it was down; 0 downs, 0 incidents; the monitor"
        f" that stopped pinging opened its incident {opened - killed_at[0]:.2f} s after the"
        f" kill (its deadline: restart + 30 s, the restart within {gap[0]:.2f} s of the kill)"
    )
