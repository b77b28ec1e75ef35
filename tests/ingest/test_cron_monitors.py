"""A cron monitor through the ingest, on the night clocks go forward in Berlin: loaded
from PostgreSQL with its schedule, it goes late at the right instant, neither a second
early nor an hour late; the same schedule in New York (no change that night) waits.

Virtual time (trio's MockClock at rate 1, plus jumps), a real PostgreSQL, real sockets.
"""

from __future__ import annotations

from datetime import UTC, datetime

import trio

from ingest.clock import Clock

from ..support.dbhelp import execute, fetch, ping, running, seed

GRACE = 60


def _utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


async def test_a_berlin_cron_monitor_goes_late_at_the_run_the_clock_change_moved(
    database_url, mock_clock
):
    mock_clock.rate = 1.0
    berlin, new_york = await seed(database_url, 2, interval_sec=86400, grace_sec=GRACE)
    for monitor, tz in ((berlin, "Europe/Berlin"), (new_york, "America/New_York")):
        await execute(
            database_url,
            "UPDATE monitors SET schedule = '30 2 * * *', tz = $2 WHERE id = $1",
            monitor.id, tz,
        )  # fmt: skip
    # Both ran yesterday (02:35 in Berlin: 01:35 UTC) and pinged.
    await execute(
        database_url,
        "UPDATE monitor_state SET state = 'up', last_seen_at = to_timestamp($1)",
        _utc("2026-03-28T01:35:00"),
    )
    # 01:55 in Berlin (CET): at 02:00 the clocks jump to 03:00; the 02:30 run is expected
    # right after the change, at 03:00 CEST (01:00 UTC), so late at 01:01 UTC.
    clock = Clock(wall=_utc("2026-03-29T00:55:00"))
    due = _utc("2026-03-29T01:00:00") + GRACE
    async with running(database_url, clock=clock, flush_interval=3600) as ingest:
        assert ingest.table.get(berlin.id)["deadline"] == due
        # New York's 02:30 is 06:30 UTC that day (its change was three weeks before).
        assert ingest.table.get(new_york.id)["deadline"] == _utc("2026-03-29T06:30:00") + GRACE
        mock_clock.jump(due - clock.now() - 0.5)
        await trio.sleep(0.2)
        assert ingest.table.get(berlin.id)["state"] == "up"  # not a second early
        mock_clock.jump(1.0)
        await trio.sleep(0.2)
        assert ingest.table.get(berlin.id)["state"] == "down"
        assert ingest.table.get(new_york.id)["state"] == "up"
        # A ping brings it back; the next run is expected tomorrow at 02:30 CEST.
        assert await ping(ingest.port, berlin.token) == 204
        assert ingest.table.get(berlin.id)["deadline"] == _utc("2026-03-30T00:30:00") + GRACE
        await ingest.flush_once()
    events = await fetch(
        database_url,
        "SELECT monitor_id, kind, extract(epoch FROM occurred_at)::float8 AS at"
        " FROM monitor_events WHERE kind IN ('down', 'incident_opened') ORDER BY id",
    )
    assert [(e["monitor_id"], e["kind"], e["at"]) for e in events] == [
        (berlin.id, "down", due), (berlin.id, "incident_opened", due),
    ]  # fmt: skip
