"""Loading from PostgreSQL's binary COPY stream, fed in chunks of every size."""

from __future__ import annotations

import io

import pytest

from core import DeadlineTable
from core.schedules import Schedule
from ingest import store
from ingest._copyload import CopyLoader

from ..support.dbhelp import execute, seed, with_conn

NOW = 1_800_000_000.0


async def copy_bytes(dsn: str, query: str = store._LOAD) -> bytes:
    async def go(conn) -> bytes:
        out = io.BytesIO()
        await conn.copy_from_query(query, output=out, format="binary")
        return out.getvalue()

    return await with_conn(dsn, go)


def load(data: bytes, chunk: int) -> DeadlineTable:
    table = DeadlineTable()
    loader = CopyLoader(table, NOW)
    for i in range(0, len(data), chunk):
        loader.feed(data[i : i + chunk])
    loader.close()
    assert loader.rows == len(table)
    return table


async def test_every_chunking_loads_the_same_monitors_and_states(database_url):
    monitors = await seed(database_url, 12, interval_sec=300, grace_sec=7, alert_threshold=3)
    await execute(
        database_url,
        "UPDATE monitor_state SET state = 'up', last_seen_at = to_timestamp(1799999000.25)"
        " WHERE monitor_id = $1",
        monitors[0].id,
    )
    await execute(
        database_url,
        "UPDATE monitor_state SET state = 'down', misses = 2, incident_open = false,"
        " last_seen_at = to_timestamp(1799990000) WHERE monitor_id = $1",
        monitors[1].id,
    )
    await execute(database_url, "UPDATE monitors SET paused = true WHERE id = $1", monitors[2].id)
    # A run open since 1799999100.5 on a monitor whose runs may take 600 s.
    await execute(
        database_url,
        "UPDATE monitor_state SET state = 'up', last_seen_at = to_timestamp(1799999000),"
        " started_at = to_timestamp(1799999100.5) WHERE monitor_id = $1",
        monitors[3].id,
    )
    await execute(
        database_url, "UPDATE monitors SET max_runtime_sec = 600 WHERE id = $1", monitors[3].id
    )
    await execute(
        database_url,
        "UPDATE monitors SET schedule = '@daily', tz = 'Asia/Tokyo' WHERE id = $1",
        monitors[4].id,
    )
    data = await copy_bytes(database_url)
    whole = load(data, len(data))
    assert sorted(whole.ids()) == sorted(m.id for m in monitors)
    up = whole.get(monitors[0].id)
    assert (up["state"], up["last_seen"], up["interval"], up["grace"], up["threshold"]) == (
        "up", 1799999000.25, 300, 7, 3,
    )  # fmt: skip
    down = whole.get(monitors[1].id)
    assert (down["state"], down["misses"], down["incident_open"]) == ("down", 2, False)
    assert whole.get(monitors[2].id)["state"] == "paused"
    running = whole.get(monitors[3].id)
    assert (running["max_runtime"], running["started"]) == (600, 1799999100.5)
    assert running["deadline"] == NOW + 300 + 7  # the next ping is due before the run
    assert whole.get(monitors[4].id)["schedule"] == Schedule("@daily", "Asia/Tokyo")
    assert whole.get(monitors[0].id)["schedule"] is None
    for chunk in (1, 2, 3, 7, 19, 64, 1000):
        table = load(data, chunk)
        for m in monitors:
            assert table.get(m.id) == whole.get(m.id), (chunk, m.id)


async def test_a_truncated_stream_is_refused(database_url):
    await seed(database_url, 3)
    data = await copy_bytes(database_url)
    loader = CopyLoader(DeadlineTable(), NOW)
    loader.feed(data[:-10])
    with pytest.raises(ValueError, match="middle of a row"):
        loader.close()


async def test_columns_other_than_the_load_query_are_refused(database_url):
    await seed(database_url, 1)
    data = await copy_bytes(database_url, "SELECT id, name FROM monitors")
    with pytest.raises(ValueError, match="expected 15 columns"):
        CopyLoader(DeadlineTable(), NOW).feed(data)


def test_garbage_is_not_a_copy_stream():
    with pytest.raises(ValueError, match="not a binary COPY"):
        CopyLoader(DeadlineTable(), NOW).feed(b"x" * 40)
