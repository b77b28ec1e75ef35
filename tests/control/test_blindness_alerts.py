"""The worker tells a blind period of the cluster (ingest/sight.py) once, to the owners of
every organisation with monitors and to the channels marked for system alerts, and once
more when the last process's period has ended; never to a monitor's own channels, never
to status-page subscribers. Real PostgreSQL, a real HTTP receiver, a real SMTP server."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from ..support.alerthelp import T0, FakeClock, channel, monitor, notifications, org, run, worker
from ..support.receivers import http_receiver, smtp_server


async def _member(conn: asyncpg.Connection, owner: str, alive: bool = True) -> None:
    await conn.execute(
        "INSERT INTO ingest_members (owner, seen_at, expires_at)"
        " VALUES ($1, now(), now() + $2::text::interval)",
        owner, "1 hour" if alive else "-1 hour",
    )  # fmt: skip


async def _period(conn: asyncpg.Connection, owner: str, since_s: float) -> int:
    period_id: int = await conn.fetchval(
        "INSERT INTO blind_periods (owner, since, detected_at, late, heard, unknown_peak)"
        " VALUES ($1, $2, $3, 400, 12, 400) RETURNING id",
        owner, T0 + timedelta(seconds=since_s), T0 + timedelta(seconds=since_s + 9),
    )  # fmt: skip
    return period_id


async def _end(conn: asyncpg.Connection, period_id: int, back_s: float) -> None:
    at = T0 + timedelta(seconds=back_s)
    await conn.execute(
        "UPDATE blind_periods SET back_at = $2, ended_at = $2::timestamptz + interval '10 s',"
        " unknown_peak = 1800 WHERE id = $1",
        period_id, at,
    )  # fmt: skip


def test_a_blind_period_of_the_cluster_is_told_once_and_its_end_once(database_url):
    async def scenario(receiver, box):
        conn = await asyncpg.connect(database_url)
        clock = FakeClock()
        async with worker(database_url, clock, smtp_url=box.url) as w:
            acme, empty = await org(conn), await org(conn, "no monitors")
            m = await monitor(conn, acme)
            for org_id, email, role in [
                (acme, "owner@acme.test", "owner"), (acme, "dev@acme.test", "member"),
                (empty, "owner@empty.test", "owner"),
            ]:  # fmt: skip
                await conn.execute(
                    "INSERT INTO users (org_id, email, role) VALUES ($1, $2, $3)",
                    org_id, email, role,
                )  # fmt: skip
            system = await channel(
                conn, acme, "webhook", {}, {"url": f"{receiver.url}/sys", "signingSecret": "s" * 20}
            )
            await conn.execute("UPDATE channels SET system_alerts = true WHERE id = $1", system)
            # The monitor's own channel hears of its incidents, not of lastseen's trouble.
            await channel(
                conn,
                acme,
                "webhook",
                {},
                {"url": f"{receiver.url}/own", "signingSecret": "s" * 20},
                m,
            )
            for owner in ("a:1", "b:1"):
                await _member(conn, owner)

            first = await _period(conn, "a:1", 0)
            second = await _period(conn, "b:1", 2)  # the other process, the same trouble
            await w.run_once()
            clock.advance(30)
            await w.run_once()
            await _end(conn, first, 95)
            await w.run_once()  # b:1 still blind: no "sees again" yet
            sent = [(r["kind"], r["channel_ref"], r["blind_id"]) for r in await notifications(conn)]
            assert sorted(sent) == [
                ("blind", f"channel:{system}", first),
                ("blind", "email:owner@acme.test", first),
            ]
            await _end(conn, second, 96)
            await w.run_once()
            await w.run_once()  # nothing more to say
            rows = await notifications(conn)
            assert sorted((r["kind"], r["channel_ref"], r["status"]) for r in rows) == [
                ("blind", f"channel:{system}", "delivered"),
                ("blind", "email:owner@acme.test", "delivered"),
                ("sighted", f"channel:{system}", "delivered"),
                ("sighted", "email:owner@acme.test", "delivered"),
            ]
            assert receiver.on("/own") == []
            blind, sighted = (r.json() for r in receiver.on("/sys"))
            assert blind["event"] == "system.blind" and blind["monitor"] is None
            assert blind["blindness"] == {
                "since": T0.isoformat(),
                "detectedAt": (T0 + timedelta(seconds=9)).isoformat(),
                "backAt": None,
                "lateMonitors": 400,
                "pingsOnTime": 12,
                "unknownMonitors": 400,
            }
            assert "no incident opens for a missed ping" in blind["text"]
            assert sighted["event"] == "system.sighted"
            assert sighted["blindness"]["backAt"] == (T0 + timedelta(seconds=95)).isoformat()
            assert sighted["text"].startswith(
                "Pings reach lastseen again since 2026-11-26 03:01:35 UTC (blind since "
                "2026-11-26 03:00:00 UTC, 1 min 35 s). At most 1800 monitors were unknown"
            )
        await conn.close()
        assert [(m["To"], m["Subject"]) for m in box.messages] == [
            ("owner@acme.test", "[lastseen] lastseen CANNOT SEE PINGS"),
            ("owner@acme.test", "[lastseen] lastseen SEES PINGS AGAIN"),
        ]

    with http_receiver() as receiver, smtp_server() as box:
        run(scenario(receiver, box))


def test_a_period_left_open_by_a_process_that_died_ends_with_its_membership(database_url):
    async def scenario(box):
        conn = await asyncpg.connect(database_url)
        async with worker(database_url, FakeClock(), smtp_url=box.url) as w:
            acme = await org(conn)
            await monitor(conn, acme)
            await conn.execute(
                "INSERT INTO users (org_id, email, role) VALUES ($1, 'o@acme.test', 'owner')", acme
            )
            await _member(conn, "gone:1", alive=False)  # killed -9 while blind
            period = await _period(conn, "gone:1", 0)
            await w.run_once()
            ended = await conn.fetchval("SELECT ended_at FROM blind_periods WHERE id = $1", period)
            assert ended is not None
            assert sorted(r["kind"] for r in await notifications(conn)) == ["blind", "sighted"]
        await conn.close()

    with smtp_server() as box:
        run(scenario(box))
