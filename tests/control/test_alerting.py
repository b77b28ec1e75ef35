"""The alert worker on a real database and real receivers, on an injected clock: incidents
from events, at-least-once delivery, backoff, Retry-After, pacing, leases."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from control.worker import LEASE, Worker

from ..support.alerthelp import (
    KEYRING,
    T0,
    FakeClock,
    channel,
    event,
    monitor,
    notifications,
    org,
    run,
    worker,
)
from ..support.receivers import http_receiver, smtp_server, stall, status, text_of


def test_an_incident_opens_once_and_every_channel_hears_of_it_and_of_the_recovery(database_url):
    async def scenario(receiver, box):
        clock = FakeClock()
        conn = await asyncpg.connect(database_url)
        async with worker(database_url, clock, smtp_url=box.url) as w:
            org_id = await org(conn)
            m = await monitor(conn, org_id, alert_email="ops@example.test")
            hook = await channel(
                conn,
                org_id,
                "webhook",
                {},
                {"url": f"{receiver.url}/hook", "signingSecret": "s" * 20},
                m,
            )
            await channel(conn, org_id, "slack", {}, {"url": f"{receiver.url}/slack"}, m)
            await event(conn, m, "down", T0)
            await event(conn, m, "incident_opened", T0)
            await event(conn, m, "incident_opened", T0 + timedelta(seconds=30))  # a repeat
            assert await w.run_once() == 3
            incidents = await conn.fetch("SELECT * FROM incidents")
            assert [(i["monitor_id"], i["opened_at"], i["resolved_at"]) for i in incidents] == [
                (m, T0, None)
            ]
            rows = await notifications(conn)
            assert sorted(
                (r["channel_type"], r["kind"], r["status"], r["attempts"]) for r in rows
            ) == [
                ("email", "alert", "delivered", 1),
                ("slack", "alert", "delivered", 1),
                ("webhook", "alert", "delivered", 1),
            ]
            # Handling the same events again changes nothing.
            await conn.execute("UPDATE monitor_events SET processed_at = NULL")
            assert await w.run_once() == 0
            assert len(await notifications(conn)) == 3

            clock.advance(90)
            await event(conn, m, "incident_resolved", T0 + timedelta(seconds=75))
            assert await w.run_once() == 3
            (incident,) = await conn.fetch("SELECT * FROM incidents")
            assert incident["resolved_at"] == T0 + timedelta(seconds=75)
            webhook = [r.json() for r in receiver.on("/hook")]
            assert [p["event"] for p in webhook] == ["incident.opened", "incident.resolved"]
            assert webhook[1]["incident"]["resolvedAt"] == (T0 + timedelta(seconds=75)).isoformat()
            keys = {r.headers["idempotency-key"] for r in receiver.on("/hook")}
            assert len(keys) == 2  # one per (incident, channel, event)
            assert hook
        await conn.close()
        subjects = [m["Subject"] for m in box.messages]
        assert subjects == ["[lastseen] DOWN: nightly", "[lastseen] RECOVERED: nightly"]

    with http_receiver() as receiver, smtp_server() as box:
        run(scenario(receiver, box))


async def _one_webhook(conn, receiver) -> int:
    org_id = await org(conn)
    m = await monitor(conn, org_id)
    await channel(
        conn, org_id, "webhook", {}, {"url": f"{receiver.url}/hook", "signingSecret": "s" * 20}, m
    )
    await event(conn, m, "incident_opened", T0)
    return m


async def _drive(w: Worker, conn, clock: FakeClock, *, until: datetime) -> None:
    """Run the worker at each moment something is due, up to `until`."""
    while True:
        await w.run_once()
        due = await conn.fetchval(
            "SELECT min(greatest(n.next_attempt_at, p.next_at)) FROM notifications n"
            " LEFT JOIN delivery_pacing p USING (channel_ref) WHERE n.status = 'pending'"
        )
        if due is None or due > until:
            return
        clock.to(due)


def test_a_receiver_failing_for_ten_minutes_gets_exactly_one_successful_delivery(database_url):
    clock = FakeClock()
    answered: list[tuple[datetime, int]] = []

    def rule(request):
        code = 500 if clock.now < T0 + timedelta(minutes=10) else 200
        answered.append((clock.now, code))
        return code, {}, b"down for maintenance" if code == 500 else b"ok"

    async def scenario(receiver):
        conn = await asyncpg.connect(database_url)
        async with worker(database_url, clock) as w:
            await _one_webhook(conn, receiver)
            await _drive(w, conn, clock, until=T0 + timedelta(hours=1))
            (row,) = await notifications(conn)
            outcomes = dict(w.outcomes)
        await conn.close()
        return row, outcomes

    with http_receiver() as receiver:
        receiver.rule = rule
        row, outcomes = run(scenario(receiver))
        requests = receiver.requests
    assert [code for _, code in answered].count(200) == 1 and answered[-1][1] == 200
    assert {r.headers["idempotency-key"] for r in requests} == {str(row["idempotency_key"])}
    assert (row["status"], row["attempts"]) == ("delivered", len(requests))
    # The worker's /metrics count each recorded attempt by its outcome.
    assert outcomes == {"retry": len(requests) - 1, "delivered": 1, "failed": 0, "expired": 0}
    gaps = [(b[0] - a[0]).total_seconds() for a, b in itertools.pairwise(answered)]
    for n, gap in enumerate(gaps, start=1):
        base = min(5 * 2 ** (n - 1), 300)
        assert 0.8 * base <= gap <= base, (n, gap, gaps)
    print(f"\nattempts {len(requests)}, gaps {[round(g) for g in gaps]}")


def test_retry_after_is_honoured_and_holds_the_whole_receiver(database_url):
    clock = FakeClock()

    async def scenario(receiver):
        conn = await asyncpg.connect(database_url)
        async with worker(database_url, clock) as w:
            await _one_webhook(conn, receiver)
            receiver.rule = status(429, b"slow down", retry_after="120")
            await w.run_once()
            assert len(receiver.requests) == 1
            receiver.rule = status(200)
            clock.advance(119)
            await w.run_once()
            assert len(receiver.requests) == 1  # not one second early
            (row,) = await notifications(conn)
            assert (row["status"], row["last_error"]) == (
                "pending",
                "HTTP 429 from 127.0.0.1: slow down",
            )
            assert row["next_attempt_at"] == T0 + timedelta(seconds=120)
            clock.advance(1)
            await w.run_once()
            (row,) = await notifications(conn)
        await conn.close()
        return row

    with http_receiver() as receiver:
        row = run(scenario(receiver))
        assert len(receiver.requests) == 2
    assert row["status"] == "delivered" and row["last_error"] is None


def test_a_permanent_error_is_recorded_exactly_and_never_retried(database_url):
    clock = FakeClock()

    async def scenario(receiver):
        conn = await asyncpg.connect(database_url)
        async with worker(database_url, clock) as w:
            await _one_webhook(conn, receiver)
            await w.run_once()
            clock.advance(3600)
            await w.run_once()
            (row,) = await notifications(conn)
            assert w.outcomes["failed"] == 1 and sum(w.outcomes.values()) == 1
        await conn.close()
        return row

    with http_receiver() as receiver:
        receiver.rule = status(404, b"no_service")
        row = run(scenario(receiver))
        assert len(receiver.requests) == 1
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert row["last_error"] == "HTTP 404 from 127.0.0.1: no_service"


def test_it_gives_up_after_48_hours_and_says_so(database_url):
    clock = FakeClock()

    async def scenario(receiver):
        conn = await asyncpg.connect(database_url)
        async with worker(database_url, clock) as w:
            await _one_webhook(conn, receiver)
            await _drive(w, conn, clock, until=T0 + timedelta(days=3))
            (row,) = await notifications(conn)
            assert w.outcomes == {"retry": 48, "expired": 1, "delivered": 0, "failed": 0}
        await conn.close()
        return row

    with http_receiver() as receiver:
        receiver.rule = status(503, b"", retry_after="3600")
        row = run(scenario(receiver))
        attempts = len(receiver.requests)
    assert row["status"] == "expired"
    assert row["last_error"] == "gave up after 48 h; last error: HTTP 503 from 127.0.0.1"
    assert attempts == row["attempts"] == 49  # at 0 h, 1 h, ... 48 h, as the receiver asked


def test_rate_limited_receivers_are_paced_and_hold_up_no_one_else(database_url):
    clock = FakeClock()

    async def scenario(receiver):
        conn = await asyncpg.connect(database_url)
        async with worker(database_url, clock) as w:
            org_id = await org(conn)
            ms = [await monitor(conn, org_id, f"m{i}") for i in range(5)]
            await channel(conn, org_id, "slack", {}, {"url": f"{receiver.url}/slack"}, *ms)
            await channel(
                conn,
                org_id,
                "webhook",
                {},
                {"url": f"{receiver.url}/hook", "signingSecret": "s" * 20},
                *ms,
            )
            for m in ms:
                await event(conn, m, "incident_opened", T0)
            await w.run_once()
            assert (len(receiver.on("/slack")), len(receiver.on("/hook"))) == (1, 5)
            for second in range(1, 5):
                await w.run_once()  # nothing more within the same second
                assert len(receiver.on("/slack")) == second
                clock.advance(1)
                await w.run_once()
                assert len(receiver.on("/slack")) == second + 1
        await conn.close()

    with http_receiver() as receiver:
        run(scenario(receiver))


def test_an_outcome_from_a_worker_whose_lease_ran_out_is_not_recorded(database_url):
    clock = FakeClock()

    async def scenario(receiver):
        conn = await asyncpg.connect(database_url)
        async with worker(database_url, clock) as slow, worker(database_url, clock) as quick:
            await _one_webhook(conn, receiver)
            await slow.process_events()
            (claimed,) = await slow.claim(10)
            clock.advance(LEASE.total_seconds())
            assert await quick.run_once() == 1  # the lease ran out: taken over, delivered
            from notifier.base import TransportError

            await slow.record(claimed, TransportError("late failure"))
            (row,) = await notifications(conn)
        await conn.close()
        return row

    with http_receiver() as receiver:
        row = run(scenario(receiver))
    assert (row["status"], row["last_error"], row["attempts"]) == ("delivered", None, 2)


@pytest.mark.faults
def test_a_worker_killed_mid_delivery_loses_nothing(database_url):
    """A real `lastseen worker` is SIGKILLed while a receiver holds its request; its row
    is claimed for at most the lease, then another worker delivers it with the same key."""
    with http_receiver() as receiver:
        receiver.rule = stall(20)

        async def setup():
            conn = await asyncpg.connect(database_url)
            await _one_webhook(conn, receiver)
            await conn.close()

        run(setup())
        env = {**os.environ, "LASTSEEN_DATABASE_URL": database_url,
               "LASTSEEN_KEYRING": KEYRING.to_json(), "LASTSEEN_ALLOW_PRIVATE_TARGETS": "1"}  # fmt: skip
        process = subprocess.Popen(
            [sys.executable, "-m", "lastseen", "worker", "--admin-listen", "127.0.0.1:0"], env=env
        )
        try:
            receiver.wait_for(1, within=30)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        killed_at = datetime.now(UTC)
        receiver.rule = status(200)

        async def after():
            conn = await asyncpg.connect(database_url)
            (row,) = await notifications(conn)
            assert row["status"] == "delivering"
            assert row["claimed_until"] - killed_at <= timedelta(seconds=60)
            clock = FakeClock(row["claimed_until"])
            async with worker(database_url, clock) as w:
                assert await w.run_once() == 1
            (row,) = await notifications(conn)
            await conn.close()
            return row

        row = run(after())
        keys = [r.headers["idempotency-key"] for r in receiver.requests]
    assert row["status"] == "delivered" and row["attempts"] == 2
    assert keys == [str(row["idempotency_key"])] * 2


def test_one_hanging_receiver_does_not_delay_other_channels(database_url):
    """The long-running loop, in real time: a receiver that holds its request for 3 s
    while another channel of another monitor is told at once."""

    async def scenario(slow, fast):
        conn = await asyncpg.connect(database_url)
        org_id = await org(conn)
        a, b = await monitor(conn, org_id, "a"), await monitor(conn, org_id, "b")
        await channel(conn, org_id, "webhook", {}, {"url": slow.url, "signingSecret": "s" * 20}, a)
        await channel(conn, org_id, "webhook", {}, {"url": fast.url, "signingSecret": "s" * 20}, b)
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=8)
        from notifier.base import Settings, Transport

        stop = asyncio.Event()
        async with Transport(Settings(allow_private=True)) as transport:
            w = Worker(pool, KEYRING, transport)
            loop = asyncio.create_task(w.run(stop, database_url))
            await event(conn, a, "incident_opened", datetime.now(UTC))
            while not slow.requests:
                await asyncio.sleep(0.02)
            await event(conn, b, "incident_opened", datetime.now(UTC))
            while not fast.requests:
                await asyncio.sleep(0.02)
            told_fast = time.monotonic()
            stop.set()
            await loop
        await pool.close()
        rows = {r["monitor_id"]: r for r in await notifications(conn)}
        await conn.close()
        return told_fast, rows[a], rows[b]

    with http_receiver() as slow, http_receiver() as fast:
        slow.rule = stall(3)
        told_fast, row_a, row_b = run(scenario(slow, fast))
        assert told_fast - slow.requests[0].at < 3  # while the slow one still held its request
        print(
            f"\nfast channel told {told_fast - slow.requests[0].at:.2f} s after the slow one hung"
        )
    assert row_b["status"] == "delivered"
    # Stopped mid-delivery: the slow row was handed back, not lost.
    assert row_a["status"] in ("pending", "delivered")


def test_several_workers_deliver_each_notification_exactly_once(database_url):
    clock = FakeClock()

    async def scenario(receiver):
        conn = await asyncpg.connect(database_url)
        org_id = await org(conn)
        ms = [await monitor(conn, org_id, f"m{i}") for i in range(40)]
        for path in ("/a", "/b"):
            await channel(
                conn,
                org_id,
                "webhook",
                {},
                {"url": f"{receiver.url}{path}", "signingSecret": "s" * 20},
                *ms,
            )
        for m in ms:
            await event(conn, m, "incident_opened", T0)
        async with (
            worker(database_url, clock) as w1,
            worker(database_url, clock) as w2,
            worker(database_url, clock) as w3,
        ):
            for w in (w1, w2, w3):
                w.concurrency = 7  # small claims, so the three interleave
            await asyncio.gather(w1.run_once(), w2.run_once(), w3.run_once())
            rows = await notifications(conn)
        await conn.close()
        return rows

    with http_receiver() as receiver:
        rows = run(scenario(receiver))
        keys = [r.headers["idempotency-key"] for r in receiver.requests]
    assert len(rows) == 80 and {r["status"] for r in rows} == {"delivered"}
    assert len(keys) == len(set(keys)) == 80
    assert len(await_incidents := {r["incident_id"] for r in rows}) == 40, await_incidents


def test_a_storm_on_a_rate_limited_channel_never_loops_on_429s(database_url):
    """300 incidents at once, all told to one Slack webhook that answers 429 to anything
    faster than one message a second, and to one webhook with no limit."""
    clock = FakeClock()
    last: list[datetime] = []
    refused = 0

    def slack(request):
        nonlocal refused
        if request.path == "/hook":
            return 200, {}, b""
        if last and clock.now - last[-1] < timedelta(seconds=1):
            refused += 1
            return 429, {"retry-after": "1"}, b"rate_limited"
        last.append(clock.now)
        return 200, {}, b"ok"

    async def scenario(receiver):
        conn = await asyncpg.connect(database_url)
        org_id = await org(conn)
        ms = [await monitor(conn, org_id, f"m{i}") for i in range(300)]
        await channel(conn, org_id, "slack", {}, {"url": f"{receiver.url}/slack"}, *ms)
        await channel(
            conn,
            org_id,
            "webhook",
            {},
            {"url": f"{receiver.url}/hook", "signingSecret": "s" * 20},
            *ms,
        )
        for m in ms:
            await event(conn, m, "incident_opened", T0)
        async with worker(database_url, clock) as w:
            await w.run_once()
            hooks_at_once = len(receiver.on("/hook"))
            await _drive(w, conn, clock, until=T0 + timedelta(hours=1))
            statuses = {r["status"] for r in await notifications(conn)}
        await conn.close()
        return hooks_at_once, statuses

    with http_receiver() as receiver:
        receiver.rule = slack
        hooks_at_once, statuses = run(scenario(receiver))
        slack_requests = len(receiver.on("/slack"))
    assert statuses == {"delivered"}
    assert hooks_at_once == 300  # the unlimited channel is not held behind the paced one
    assert refused == 0 and slack_requests == 300
    assert (last[-1] - last[0]).total_seconds() == 299  # one a second, no faster


class Silent:
    """A receiver that takes requests and never answers (on its own loopback host); it
    reads what it is sent and counts the connections open at once."""

    def __init__(self, host: str) -> None:
        import selectors
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(1024)
        self.url = f"http://{host}:{self.sock.getsockname()[1]}/hook"
        self.open = self.peak = self.accepted = 0
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.sock, selectors.EVENT_READ)
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop:
            for key, _ in self._selector.select(timeout=0.1):
                s = key.fileobj
                if s is self.sock:
                    conn, _ = self.sock.accept()
                    self._selector.register(conn, 1)
                    self.accepted += 1
                    self.open += 1
                    self.peak = max(self.peak, self.open)
                    continue
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self._selector.unregister(s)
                    s.close()
                    self.open -= 1

    def close(self) -> None:
        self._stop = True
        self.thread.join(5)
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()


def test_a_hanging_receiver_only_ever_delays_itself(database_url):
    """Issue 16, item 2: 320 monitors share one receiver that takes requests and never
    answers; before, they filled every delivery slot and another monitor's alert to a
    healthy receiver waited for their timeouts (101 s in the probe). Now that receiver
    gets at most PER_RECEIVER deliveries at a time, and the healthy one is told at once."""
    from control.worker import PER_RECEIVER

    hanging = Silent("127.0.0.2")

    async def scenario(fast):
        conn = await asyncpg.connect(database_url)
        org_id = await org(conn)
        many = [await monitor(conn, org_id, f"m{i}") for i in range(320)]
        secret = {"url": hanging.url, "signingSecret": "s" * 20}
        await channel(conn, org_id, "webhook", {}, secret, *many)
        healthy = await monitor(conn, org_id, "healthy")
        await channel(conn, org_id, "webhook", {}, {"url": fast.url, "signingSecret": "s" * 20},
                      healthy)  # fmt: skip
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=8)
        from notifier.base import Settings, Transport

        stop = asyncio.Event()
        async with Transport(Settings(allow_private=True)) as transport:
            w = Worker(pool, KEYRING, transport)
            loop = asyncio.create_task(w.run(stop, database_url))
            for m in many:
                await event(conn, m, "incident_opened", datetime.now(UTC))
            while hanging.open < PER_RECEIVER:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)  # every slot the hanging host may take is taken
            sent = time.monotonic()
            await event(conn, healthy, "incident_opened", datetime.now(UTC))
            while not fast.requests:
                await asyncio.sleep(0.02)
            latency = fast.requests[0].at - sent
            held = hanging.peak
            stop.set()
            await loop
        await pool.close()
        await conn.close()
        return latency, held

    try:
        with http_receiver() as fast:
            latency, held = run(scenario(fast))
    finally:
        hanging.close()
    # The hanging host never had more than its share open at once, and the healthy
    # receiver was told before the first of the hung requests could time out (10 s).
    assert held == PER_RECEIVER
    assert latency < 10
    print(
        f"\n320 alerts to a receiver that never answers: {held} in flight to it; the healthy"
        f" receiver told {latency:.2f} s after its incident"
    )


def test_a_row_that_never_gets_an_outcome_still_ends_after_48_hours(database_url):
    """Issue 16, item 3: a delivery that takes the worker down every time (its claim's
    lease runs out, again and again) used to be re-claimed forever."""
    clock = FakeClock()

    async def scenario(receiver):
        conn = await asyncpg.connect(database_url)
        async with worker(database_url, clock) as w:
            await _one_webhook(conn, receiver)
            await w.process_events()
            claims = 0
            # Claimed, then the worker "dies" before recording anything: lease after lease.
            while clock.now < T0 + timedelta(hours=49):
                claims += len(await w.claim(10))
                w._per_receiver.clear()  # (a new worker process would start from nothing)
                w._receiver_of.clear()
                clock.advance(LEASE.total_seconds())
            (row,) = await notifications(conn)
        await conn.close()
        return claims, row

    with http_receiver() as receiver:
        claims, row = run(scenario(receiver))
    assert row["status"] == "expired"
    assert row["last_error"] == "gave up after 48 h; last error: none recorded"
    # One claim per lease for 48 h, and at most the minute between two expiry sweeps more.
    assert claims == row["attempts"] <= (48 * 3600 + 60) / LEASE.total_seconds() + 1


def test_an_unexpected_error_in_a_delivery_is_recorded_not_lost(database_url, monkeypatch):
    """Every delivery path catches everything: a bug in a channel or in the subscriber
    mail becomes the row's error, retried with backoff, never a crashed task."""
    from notifier import channels as registry

    clock = FakeClock()

    async def broken(*_args, **_kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(registry, "send", broken)

    async def scenario(receiver):
        conn = await asyncpg.connect(database_url)
        async with worker(database_url, clock) as w:
            await _one_webhook(conn, receiver)
            await w.run_once()
            (row,) = await notifications(conn)
        await conn.close()
        return row

    with http_receiver() as receiver:
        row = run(scenario(receiver))
    assert (row["status"], row["last_error"]) == ("pending", "internal error (KeyError)")


def test_a_pause_closes_the_incident_without_a_recovery_and_tells_no_subscriber(database_url):
    """Pausing a down monitor closed its incident with an `incident_resolved`, told to
    every channel and status-page subscriber as "is pinging again" (issue 13). A pause
    now closes it as a pause: `resolvedBy: pause`, a neutral notice to the channels, and
    nothing to subscribers, who hear of outages and recoveries only."""

    async def scenario(receiver, box):
        clock = FakeClock()
        conn = await asyncpg.connect(database_url)
        async with worker(database_url, clock, smtp_url=box.url) as w:
            org_id = await org(conn)
            m = await monitor(conn, org_id, alert_email="ops@example.test")
            await channel(
                conn, org_id, "webhook", {},
                {"url": f"{receiver.url}/hook", "signingSecret": "s" * 20}, m,
            )  # fmt: skip
            page = await conn.fetchval(
                "INSERT INTO status_pages (org_id, slug, title) VALUES ($1, 'acme', 'Acme')"
                " RETURNING id",
                org_id,
            )
            await conn.execute(
                "INSERT INTO status_page_monitors (page_id, monitor_id, position) VALUES ($1, $2, 0)",
                page, m,
            )  # fmt: skip
            await conn.execute(
                "INSERT INTO subscribers (page_id, email, confirmed_at) VALUES ($1, $2, now())",
                page, "fan@example.test",
            )  # fmt: skip
            last_ping = T0 - timedelta(seconds=30)
            await event(conn, m, "down", T0, last_ping)
            await event(conn, m, "incident_opened", T0, last_ping)
            assert await w.run_once() == 3  # webhook, alertEmail, the subscriber
            clock.advance(60)
            await event(conn, m, "incident_paused", T0 + timedelta(seconds=50), last_ping)
            await w.run_once()
            (incident,) = await conn.fetch("SELECT * FROM incidents")
            assert incident["resolved_by"] == "pause"
            assert incident["resolved_at"] == T0 + timedelta(seconds=50)
            assert (incident["last_ping_at"], incident["expected_at"]) == (last_ping, T0)
            rows = await notifications(conn)
            assert sorted((r["channel_ref"].split(":")[0], r["kind"]) for r in rows) == [
                ("channel", "alert"), ("channel", "closed"), ("email", "alert"),
                ("email", "closed"), ("subscriber", "alert"),
            ]  # fmt: skip
        await conn.close()
        hook = [r.json() for r in receiver.on("/hook")]
        assert [(h["event"], h["incident"]["resolvedBy"]) for h in hook] == [
            ("incident.opened", None), ("incident.resolved", "pause"),
        ]  # fmt: skip
        assert hook[0]["incident"]["lastPingAt"] == last_ping.isoformat()
        assert hook[0]["incident"]["expectedAt"] == T0.isoformat()
        by_subject = {m["Subject"]: m for m in box.messages if m["To"] == "ops@example.test"}
        assert sorted(by_subject) == ["[lastseen] DOWN: nightly", "[lastseen] PAUSED: nightly"]
        assert "closed without a recovery" in text_of(by_subject["[lastseen] PAUSED: nightly"])
        assert not any("pinging again" in text_of(m) for m in box.messages)

    with http_receiver() as receiver, smtp_server() as box:
        run(scenario(receiver, box))
