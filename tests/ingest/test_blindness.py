"""Blindness through the ingest: 600 monitors on 30 s, real pings over HTTP, all of them
stopped for 90 s (the client side; the ingest stays up), then resumed except five that
stay dead. No incident for the resumed ones, one blind period recorded, the dead ones
alerted at their deadline counted from when pings came back; meanwhile the database
says 'unknown', not 'down'.

The ingest's clock is stepped a second at a time (its reading jumps; trio's own time,
which database timeouts use, runs normally), a real PostgreSQL, real sockets.
"""

from __future__ import annotations

import trio

from core.pg import free_port
from ingest.clock import Clock

from ..support.dbhelp import execute, fetch, metrics, running, seed


class Stepped(Clock):
    """The ingest's clock, moved on by hand."""

    def skip(self, seconds: float) -> None:
        self.offset += seconds


N = 600
INTERVAL = 30
GRACE = 5
T = 1_790_000_000.0


async def _ping_all(port: int, tokens: list[str]) -> list[int]:
    """One pipelined connection: every token once; the statuses, in order."""
    if not tokens:
        return []
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        requests = [f"POST /api/v1/heartbeats/{t} HTTP/1.1\r\nHost: f\r\n\r\n" for t in tokens]
        requests[-1] = requests[-1].replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n")
        await stream.send_all("".join(requests).encode())
        answer = b""
        while chunk := await stream.receive_some():
            answer += chunk
    return [int(line.split(b" ")[1]) for line in answer.split(b"\r\n") if line.startswith(b"HTTP/")]


async def test_pings_stopped_for_everyone_are_unknown_not_down(database_url):
    monitors = await seed(database_url, N, interval_sec=INTERVAL, grace_sec=GRACE)
    dead = {m.id for m in monitors[::120]}  # five die during the gap
    clock = Stepped(wall=T)
    phase = {m.id: (i * INTERVAL) // N for i, m in enumerate(monitors)}  # 20 a second

    steps = 0  # the clock's seconds (it also runs in real time a little between steps)

    async def run_for(seconds: int, pinging: bool, skip: frozenset[int] = frozenset()) -> None:
        nonlocal steps
        for _ in range(seconds):
            second, steps = steps % INTERVAL, steps + 1
            if pinging:
                due = [m.token for m in monitors if phase[m.id] == second and m.id not in skip]
                assert set(await _ping_all(ingest.port, due)) <= {204}
            clock.skip(1.0)
            assert ingest.deadlines is not None
            ingest.deadlines.wake()
            await trio.sleep(0.01)

    async with running(database_url, clock=clock) as ingest:
        await run_for(2 * INTERVAL, pinging=True)
        assert {ingest.table.get(m.id)["state"] for m in monitors} == {"up"}
        gap = clock.now()
        await run_for(90, pinging=False)  # the load balancer in front is dead
        resumed = clock.now()
        assert ingest.sight.blind
        await ingest.flush_once()
        states = await fetch(database_url, "SELECT state, count(*) FROM monitor_state GROUP BY 1")
        assert {r["state"]: r["count"] for r in states} == {"unknown": N}
        shown = await metrics(ingest.admin_port)
        assert shown["blind"] == 1 and shown["unknown_monitors"] == N
        await run_for(4 * INTERVAL, pinging=True, skip=frozenset(dead))
        assert not ingest.sight.blind
        await ingest.flush_once()
        shown = await metrics(ingest.admin_port)
        assert shown["blind"] == 0 and shown["blind_periods_total"] == 1
        assert shown["misses_undone_total"] >= 50

    periods = await fetch(
        database_url,
        "SELECT owner, extract(epoch FROM since)::float8 AS since,"
        " extract(epoch FROM back_at)::float8 AS back, ended_at IS NOT NULL AS ended,"
        " unknown_peak FROM blind_periods",
    )
    assert len(periods) == 1 and periods[0]["ended"] and periods[0]["unknown_peak"] == N
    assert gap < periods[0]["since"] < gap + INTERVAL + GRACE
    back = periods[0]["back"]
    assert resumed < back < resumed + INTERVAL / 2
    events = await fetch(
        database_url,
        "SELECT monitor_id, kind, extract(epoch FROM occurred_at)::float8 AS at"
        " FROM monitor_events WHERE kind IN ('down', 'incident_opened') ORDER BY id",
    )
    # Only the dead, each at the deadline counted from when pings came back.
    assert {e["monitor_id"] for e in events} == dead
    assert {(e["kind"], e["at"]) for e in events} == {
        ("down", back + INTERVAL + GRACE), ("incident_opened", back + INTERVAL + GRACE),
    }  # fmt: skip
    states = await fetch(database_url, "SELECT state, count(*) FROM monitor_state GROUP BY 1")
    assert {r["state"]: r["count"] for r in states} == {"up": N - 5, "down": 5}


async def test_a_period_left_open_by_this_process_ends_when_it_starts_again(database_url):
    """Killed while blind, it comes back under the same name (its admin address): what
    it left open is over, and it judges afresh (a dead owner's membership would have
    ended it; a live one under that name would have kept it open for ever)."""
    admin = free_port()
    await execute(
        database_url,
        "INSERT INTO blind_periods (owner, since, detected_at, late, heard)"
        " VALUES ($1, now(), now(), 60, 0), ('other:1', now(), now(), 60, 0)",
        f"127.0.0.1:{admin}",
    )  # fmt: skip
    async with running(database_url, admin_port=admin):
        pass
    rows = await fetch(database_url, "SELECT owner, ended_at IS NULL AS open FROM blind_periods")
    assert {r["owner"]: r["open"] for r in rows} == {f"127.0.0.1:{admin}": False, "other:1": True}
