"""Retention (control/retention.py) on a real PostgreSQL: what is past its period goes,
in batches; what is still needed (an event not handled, a notification still queued,
recent rows) stays; the worker runs it once an hour, by its injected clock."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import httpx
import pytest

from control import retention
from control.admin import serve_admin
from control.retention import Periods

from ..support.alerthelp import T0, FakeClock, event, monitor, org, run, worker


def test_what_is_past_its_period_goes_and_what_is_needed_stays(database_url, monkeypatch):
    monkeypatch.setattr(retention, "BATCH", 2)  # several batches with a handful of rows

    async def scenario() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            org_id = await org(conn)
            m = await monitor(conn, org_id)
            gone_monitor = await monitor(conn, org_id, name="deleted")
            old, recent = T0 - timedelta(days=91), T0 - timedelta(days=1)
            for at in (old, old - timedelta(days=1), old - timedelta(days=2), recent):
                await event(conn, m, "up", at)
            await event(conn, m, "down", old)  # not handled yet: stays, however old
            await conn.execute(
                "UPDATE monitor_events SET processed_at = occurred_at WHERE kind = 'up'"
            )
            incident = await conn.fetchval(
                "INSERT INTO incidents (org_id, monitor_id, opened_at) VALUES ($1, $2, $3)"
                " RETURNING id",
                org_id, m, old,
            )  # fmt: skip
            for status, finished in [
                ("delivered", T0 - timedelta(days=31)), ("failed", T0 - timedelta(days=40)),
                ("expired", T0 - timedelta(days=35)), ("delivered", recent),
                ("pending", None),
            ]:  # fmt: skip
                await conn.execute(
                    "INSERT INTO notifications (org_id, monitor_id, incident_id, channel_type,"
                    " channel_ref, kind, status, next_attempt_at, created_at, finished_at)"
                    " VALUES ($1, $2, $3, 'webhook', $4, 'alert', $5, $6, $6, $7)",
                    org_id, m, incident, f"ref-{status}-{finished}", status, old, finished,
                )  # fmt: skip
            for monitor_id, at in [(m, old), (m, old), (m, recent), (gone_monitor, recent)]:
                await conn.execute(
                    "INSERT INTO pings (monitor_id, received_at, kind, method)"
                    " VALUES ($1, $2, 'log', 'POST')",
                    monitor_id, at,
                )  # fmt: skip
            # A row that raced its monitor's deletion: the trigger had run, the row came.
            await conn.execute("DELETE FROM monitors WHERE id = $1", gone_monitor)
            await conn.execute(
                "INSERT INTO monitor_deletions (monitor_id) VALUES ($1)", gone_monitor
            )
            await conn.execute(
                "INSERT INTO pings (monitor_id, received_at, kind, method)"
                " VALUES ($1, $2, 'log', 'POST')",
                gone_monitor, recent,
            )  # fmt: skip

            # Blind periods: an old one told of its end goes; one not yet told, or
            # recent, stays.
            for ended, told in [(old, True), (old, False), (recent, True)]:
                await conn.execute(
                    "INSERT INTO blind_periods (owner, since, detected_at, late, heard,"
                    " ended_at, notified, end_notified) VALUES ('x', $1, $1, 60, 0, $1, true,"
                    " $2)",
                    ended, told,
                )  # fmt: skip

            # Audit entries: the worker asks for those past 400 days (the database
            # would refuse anything younger than 365 by its own clock, later than T0).
            for days in (500, 401, 399, 10):
                await conn.execute(
                    "INSERT INTO audit_log (org_id, action, created_at) VALUES ($1, $2, $3)",
                    org_id, f"A{days}", T0 - timedelta(days=days),
                )  # fmt: skip

            clock = FakeClock()
            async with worker(database_url, clock) as w:
                w.retain_for = Periods()
                assert await w.retain() == {
                    "events": 3, "notifications": 3, "pings": 2, "blind periods": 1,
                    "orphan pings": 1, "audit entries": 2,
                }  # fmt: skip
                # What it did is in the worker's /metrics, served by its admin listener.
                server = await serve_admin("127.0.0.1", 0, w.metrics, w.health)
                try:
                    port = server.sockets[0].getsockname()[1]
                    url = f"http://127.0.0.1:{port}"
                    got = await asyncio.to_thread(httpx.get, f"{url}/metrics")
                    health = (await asyncio.to_thread(httpx.get, f"{url}/healthz")).json()
                    missing = await asyncio.to_thread(httpx.get, f"{url}/nothing")
                finally:
                    server.close()
                assert got.status_code == 200 and missing.status_code == 404
                for line in ('lastseen_retention_deleted_total{kind="events"} 3',
                             'lastseen_retention_deleted_total{kind="audit_entries"} 2',
                             'lastseen_retention_deleted_total{kind="orphan_pings"} 1',
                             "lastseen_retention_runs_total 1",
                             f"lastseen_retention_last_run_timestamp_seconds {T0.timestamp()}",
                             'lastseen_worker_deliveries_total{outcome="delivered"} 0'):  # fmt: skip
                    assert line in got.text.splitlines(), line
                assert health["retentionLastRun"] == T0.isoformat()
                clock.advance(60)
                assert await w.retain() is None  # an hour between runs
                clock.advance(3600)
                assert await w.retain() == {
                    "events": 0, "notifications": 0, "pings": 0, "blind periods": 0,
                    "orphan pings": 0, "audit entries": 0,
                }  # fmt: skip

            events = await conn.fetch("SELECT kind, occurred_at FROM monitor_events")
            assert sorted((e["kind"], e["occurred_at"]) for e in events) == [
                ("down", old), ("up", recent),
            ]  # fmt: skip
            left = await conn.fetch("SELECT status FROM notifications ORDER BY id")
            assert [r["status"] for r in left] == ["delivered", "pending"]
            audit = await conn.fetch("SELECT action FROM audit_log ORDER BY id")
            assert [a["action"] for a in audit] == ["A399", "A10"]
            blind = await conn.fetch("SELECT ended_at, end_notified FROM blind_periods")
            assert sorted((b["ended_at"], b["end_notified"]) for b in blind) == [
                (old, False), (recent, True),
            ]  # fmt: skip
            pings = await conn.fetch("SELECT monitor_id, received_at FROM pings")
            assert [(p["monitor_id"], p["received_at"]) for p in pings] == [(m, recent)]
        finally:
            await conn.close()

    run(scenario())


def test_a_worker_without_periods_deletes_nothing(database_url):
    async def scenario() -> None:
        async with worker(database_url) as w:
            assert await w.retain() is None

    run(scenario())


def test_nobody_deletes_an_audit_entry_younger_than_a_year(database_url):
    """The one path that deletes audit entries refuses a cutoff under 365 days, and a
    direct DELETE stays refused even of old entries, even for a superuser."""

    async def scenario() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            org_id = await org(conn)
            await conn.execute(
                "INSERT INTO audit_log (org_id, action, created_at) VALUES"
                " ($1, 'young', now() - interval '364 days'),"
                " ($1, 'old', now() - interval '800 days')",
                org_id,
            )  # fmt: skip
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="at least 365 days"):
                await conn.fetchval("SELECT prune_audit_log(now(), 100)")
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await conn.execute("DELETE FROM audit_log WHERE action = 'old'")
            # The flag alone lets nothing younger than a year go.
            async with conn.transaction():
                await conn.execute("SELECT set_config('lastseen.audit_prune', 'on', true)")
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                    await conn.execute("DELETE FROM audit_log WHERE action = 'young'")
            assert await conn.fetchval(
                "SELECT prune_audit_log(now() - interval '365 days', 100)"
            ) == 1  # fmt: skip
            rows = await conn.fetch("SELECT action FROM audit_log")
            assert [r["action"] for r in rows] == ["young"]
        finally:
            await conn.close()

    run(scenario())
