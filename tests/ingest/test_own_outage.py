"""Our own outage (issue 6, scenario 5): the ingest is down for five minutes while every
client keeps its schedule. When it comes back, the monitors that resume on schedule must
not alert (the wave of false alerts a naive restart sends), and a monitor that really died
must still alert, within interval + grace + 3 s of the deadline it got at the restart.

Virtual time (trio's MockClock at rate 1, plus jumps), a real PostgreSQL, real sockets and
the real alert worker turning events into incidents.
"""

from __future__ import annotations

import os

import pytest
import trio

from ingest.clock import Clock

from ..support.aio import run
from ..support.alerthelp import worker
from ..support.dbhelp import fetch, running, seed

INTERVAL = 30
GRACE = 5
OUTAGE = 300
MONITORS = 1000 if os.environ.get("LASTSEEN_SLOW") else 120

pytestmark = pytest.mark.faults


async def _ping_all(port: int, tokens: list[str]) -> list[int]:
    """Ping each token over one keep-alive connection, as a fleet's proxy would."""
    statuses: list[int] = []
    if not tokens:
        return statuses
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        for token in tokens:
            await stream.send_all(
                f"POST /api/v1/heartbeats/{token} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
            )
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += await stream.receive_some()
            statuses.append(int(answer.split(b" ", 2)[1]))
    return statuses


async def test_our_five_minute_outage_raises_no_false_alert_and_a_dead_monitor_still_alerts(
    database_url, mock_clock
):
    mock_clock.rate = 1.0
    fleet = await seed(database_url, MONITORS, interval_sec=INTERVAL, grace_sec=GRACE)
    dead = fleet[0]  # pings until the outage, never after
    phase = {m.id: i % INTERVAL for i, m in enumerate(fleet)}  # spread over the interval
    clock = Clock()
    statuses: list[int] = []

    async def run_schedule(port: int, seconds: int, start: int, pingers: list) -> None:
        for t in range(start, start + seconds):
            mock_clock.jump(1)
            due = [m.token for m in pingers if phase[m.id] == t % INTERVAL]
            statuses.extend(await _ping_all(port, due))

    # (The test flushes by hand: a flush in flight while the virtual clock jumps would
    # time out in virtual seconds.)
    # Two intervals of normal service: everybody pings on schedule.
    async with running(database_url, clock=clock, flush_interval=3600) as ingest:
        await run_schedule(ingest.port, 2 * INTERVAL, 0, fleet)
    # Five minutes down: the clients' pings find nobody listening (we just let the clock
    # run); the dead monitor's host dies at the start of it.
    mock_clock.jump(OUTAGE)
    restart = clock.now()
    async with running(database_url, clock=clock, flush_interval=3600) as ingest:
        assert ingest.started_at is not None and ingest.started_at >= restart
        await run_schedule(ingest.port, 3 * INTERVAL, 2 * INTERVAL + OUTAGE, fleet[1:])
        await ingest.flush_once()
        last = ingest.table.get(dead.id)
        assert last["state"] == "down"
    assert set(statuses) == {204}

    events = await fetch(
        database_url,
        "SELECT monitor_id, kind, extract(epoch FROM occurred_at)::float8 AS at"
        " FROM monitor_events WHERE kind <> 'up' ORDER BY id",
    )
    # Nothing but the dead monitor went down, and it went down once and opened one incident.
    assert [(e["monitor_id"], e["kind"]) for e in events] == [
        (dead.id, "down"),
        (dead.id, "incident_opened"),
    ]
    deadline = restart + INTERVAL + GRACE
    late = events[0]["at"] - deadline
    assert 0 <= late <= 3, late

    # The alert worker turns exactly that into exactly one incident.
    async def process() -> int:
        async with worker(database_url) as w:
            handled = 0
            while batch := await w.process_events():
                handled += batch
            return handled

    await trio.to_thread.run_sync(run, process())
    incidents = await fetch(database_url, "SELECT monitor_id FROM incidents")
    assert [r["monitor_id"] for r in incidents] == [dead.id]
    print(
        f"\n{MONITORS} monitors, ingest down {OUTAGE} s: {len(statuses)} pings all 204,"
        f" 0 false incidents; the dead monitor went down {late:.2f} s after its"
        f" deadline (restart + {INTERVAL} + {GRACE} s) and opened the one incident"
    )
