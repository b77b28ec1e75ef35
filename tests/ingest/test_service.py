"""The ingest process against a real PostgreSQL: load, flush, follow, stop."""

from __future__ import annotations

import trio

from core.tokens import digest, new_token

from ..support.dbhelp import execute, fetch, http, notifications, ping, running, seed, wait_for


async def test_pings_are_answered_and_flushed_with_the_exact_receive_time(database_url):
    monitors = await seed(database_url, 3)
    async with running(database_url) as ingest:
        for m in monitors:
            for _ in range(3):
                assert await ping(ingest.port, m.token) == 204
        assert await ping(ingest.port, new_token()) == 404
        assert await ingest.flush_once()
        rows = await fetch(
            database_url,
            "SELECT monitor_id AS id, state, extract(epoch FROM last_seen_at)::float8 AS seen"
            " FROM monitor_state",
        )
        for row in rows:
            assert row["state"] == "up"
            assert abs(row["seen"] - ingest.table.get(row["id"])["last_seen"]) < 1e-5
        events = await fetch(database_url, "SELECT monitor_id, kind FROM monitor_events")
        assert sorted(events) == sorted((m.id, "up") for m in monitors)
        assert ingest.flush_rows == 3  # nine pings, three rows


async def test_a_missed_deadline_lands_as_state_and_events_with_a_notify(database_url, mock_clock):
    mock_clock.rate = 1.0  # real time, plus jumps
    [m] = await seed(database_url, 1, interval_sec=30, grace_sec=0)
    async with running(database_url, flush_interval=3600) as ingest:
        assert await ping(ingest.port, m.token) == 204
        await ingest.flush_once()
        mock_clock.jump(31)

        async def down() -> bool:
            return ingest.table.get(m.id)["state"] == "down"

        await wait_for(down)
        async with notifications(database_url, "lastseen_events") as notified:
            await ingest.flush_once()
        assert notified == [True]
        rows = await fetch(database_url, "SELECT state, misses, incident_open FROM monitor_state")
        assert tuple(rows[0]) == ("down", 1, True)
        kinds = await fetch(database_url, "SELECT kind FROM monitor_events ORDER BY id")
        assert [k[0] for k in kinds] == ["up", "down", "incident_opened"]
        lag = ingest.detection_lag
        assert lag.count == 2


async def test_monitors_created_rotated_paused_and_deleted_reach_the_ingest(database_url):
    [m] = await seed(database_url, 1)
    async with running(database_url) as ingest:
        [new] = await seed(database_url, 1)

        async def answers(token: str, status: int) -> bool:
            return await ping(ingest.port, token) == status

        # Within 1 s by the NOTIFY (printed; a timed assertion would only measure the machine).
        took = await wait_for(lambda: answers(new.token, 204), within=10)
        print(f"a created monitor answered after {took:.3f} s")
        rotated = new_token()
        await execute(database_url, "UPDATE monitors SET token_digest = $1 WHERE id = $2",
                      digest(rotated), m.id)  # fmt: skip
        await wait_for(lambda: answers(m.token, 404), within=10)
        assert await ping(ingest.port, rotated) == 204
        await execute(database_url, "UPDATE monitors SET paused = true WHERE id = $1", m.id)
        await wait_for(lambda: _state(ingest, m.id, "paused"), within=10)
        assert await ping(ingest.port, rotated) == 204  # paused monitors still take pings
        await execute(database_url, "DELETE FROM monitors WHERE id = $1", new.id)
        await wait_for(lambda: answers(new.token, 404), within=10)


async def _state(ingest, monitor_id: int, state: str) -> bool:
    row = ingest.table.get(monitor_id)
    return row is not None and row["state"] == state


async def test_a_killed_listen_connection_loses_no_change(database_url):
    async with running(database_url, poll_interval=0.5) as ingest:
        await execute(
            database_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'lastseen-ingest-follow'",
        )
        # Changes made while the feed is down arrive by the resync or the next poll.
        created = await seed(database_url, 5)
        await execute(database_url, "DELETE FROM monitors WHERE id = $1", created[0].id)

        async def applied() -> bool:
            return sorted(ingest.table.ids()) == sorted(m.id for m in created[1:])

        took = await wait_for(applied, within=15)
        print(f"changes made while the feed was down applied after {took:.3f} s")


async def test_a_graceful_stop_flushes_the_last_pings(database_url):
    [m] = await seed(database_url, 1)
    async with running(database_url, flush_interval=3600) as ingest:
        assert await ping(ingest.port, m.token) == 204
        expected = ingest.table.get(m.id)["last_seen"]
    [row] = await fetch(
        database_url, "SELECT extract(epoch FROM last_seen_at)::float8 FROM monitor_state"
    )
    assert abs(row[0] - expected) < 1e-5


async def test_after_a_restart_a_long_silent_monitor_gets_the_amnesty(database_url):
    [m] = await seed(database_url, 1, interval_sec=30, grace_sec=0)
    await execute(
        database_url,
        "UPDATE monitor_state SET state = 'up', last_seen_at = now() - interval '1 hour'",
    )
    async with running(database_url) as ingest:
        row = ingest.table.get(m.id)
        assert row["state"] == "up"
        assert row["deadline"] >= ingest.started_at + 30
        await trio.sleep(0.3)
        await ingest.flush_once()
        assert await fetch(database_url, "SELECT * FROM monitor_events") == []


async def test_metrics_and_health_report_what_happened(database_url):
    [m] = await seed(database_url, 1)
    async with running(database_url) as ingest:
        assert await ping(ingest.port, m.token) == 204
        assert await ping(ingest.port, new_token()) == 404
        assert await ping(ingest.port, "nope") == 404
        await ingest.flush_once()
        metrics = await http(ingest.admin_port, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
        text = metrics.decode()
        assert 'lastseen_pings_total{result="ok"} 1' in text
        assert 'lastseen_pings_total{result="unknown"} 1' in text
        assert 'lastseen_pings_total{result="malformed"} 1' in text
        assert 'lastseen_http_responses_total{status="204"} 1' in text
        assert "lastseen_monitors 1" in text
        assert "lastseen_flush_rows_total 1" in text
        assert "lastseen_database_up 1" in text
        health = await http(ingest.admin_port, b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        assert health.startswith(b"HTTP/1.1 200 ")
        assert b'"database": "up"' in health


async def test_the_deletion_log_is_pruned_after_a_day(database_url):
    [old, recent] = await seed(database_url, 2)
    await execute(database_url, "DELETE FROM monitors")
    await execute(
        database_url,
        "UPDATE monitor_deletions SET deleted_at = now() - interval '2 days' WHERE monitor_id = $1",
        old.id,
    )
    async with running(database_url):

        async def pruned() -> bool:
            rows = await fetch(database_url, "SELECT monitor_id FROM monitor_deletions")
            return [r[0] for r in rows] == [recent.id]

        await wait_for(pruned, within=10)


async def test_flap_damping_resolves_after_the_recovery_threshold_and_a_relapse_reopens_nothing(
    database_url, mock_clock
):
    """recoveryThreshold 2: the first ping after an incident makes the monitor up (a
    `recovered` event) but leaves the incident open; a miss then is the same incident
    (no second `incident_opened`, so no second page); two pings in a row resolve it."""
    mock_clock.rate = 1.0  # real time, plus jumps
    [m] = await seed(database_url, 1, interval_sec=30, grace_sec=0)
    await execute(database_url, "UPDATE monitors SET recovery_threshold = 2")
    async with running(database_url, flush_interval=3600) as ingest:

        def state() -> tuple[str, bool]:
            row = ingest.table.get(m.id)
            return row["state"], row["incident_open"]

        async def went(expected: tuple[str, bool]) -> None:
            async def reached() -> bool:
                return state() == expected

            await wait_for(reached)

        assert await ping(ingest.port, m.token) == 204
        mock_clock.jump(31)
        await went(("down", True))
        assert await ping(ingest.port, m.token) == 204  # one ping: up, still in its incident
        assert state() == ("up", True)
        await ingest.flush_once()
        rows = await fetch(database_url, "SELECT state, incident_open FROM monitor_state")
        assert tuple(rows[0]) == ("up", True)
        mock_clock.jump(31)  # silent again: down, the same incident
        await went(("down", True))
        assert await ping(ingest.port, m.token) == 204
        assert await ping(ingest.port, m.token) == 204  # two in a row: resolved
        assert state() == ("up", False)
        await ingest.flush_once()
    kinds = [k[0] for k in await fetch(database_url, "SELECT kind FROM monitor_events ORDER BY id")]
    assert kinds == [
        "up", "down", "incident_opened", "recovered", "down", "recovered", "incident_resolved",
    ]  # fmt: skip


async def test_a_failed_flush_gives_its_rows_back_as_they_were_taken(database_url):
    """A flush that fails keeps its rows for the next one, each as it was: a monitor only
    pinged since the last flush stays a last-seen row, not a whole one (with the seen
    log off, those rows are taken at every flush)."""
    [m] = await seed(database_url, 1)
    async with running(database_url, flush_interval=3600, seen_interval=0) as ingest:
        assert await ping(ingest.port, m.token) == 204
        assert await ingest.flush_once()  # pending -> up: its whole row
        assert await ping(ingest.port, m.token) == 204  # up already: only its last_seen
        await execute(
            database_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'lastseen-ingest-flush'",
        )
        assert not await ingest.flush_once()
        assert ingest.flush_failures == 1
        rows = ingest.table.take_dirty()
        assert (rows.seen_ids, rows.ids) == ([m.id], [])
        ingest.table.mark_dirty(rows.seen_ids, changed=False)
        assert await ingest.flush_once()  # a new connection: written
        [(seen,)] = await fetch(
            database_url, "SELECT extract(epoch FROM last_seen_at)::float8 FROM monitor_state"
        )
        assert abs(seen - ingest.table.get(m.id)["last_seen"]) < 1e-5
