"""The alert worker (`lastseen worker`): events -> incidents -> a durable outbox -> channels.

How this works
--------------
The ingest writes what it observed to ``monitor_events``. The worker reads them in order
(one worker at a time, under an advisory lock, so an incident's opening is always handled
before its resolution) and in the same transaction opens or resolves the incident and
queues one ``notifications`` row per channel of the monitor (and its ``alertEmail``). A
unique partial index keeps one open incident per monitor, and one row per (incident,
channel, kind), so handling an event twice changes nothing.

Deliveries are claimed with ``FOR UPDATE SKIP LOCKED`` under a lease (``claimed_until``):
several workers can run, and the rows of a worker killed mid-delivery return to the queue
when the lease ends (within LEASE). Each claim carries a fresh id; an outcome is recorded
only by ``UPDATE ... WHERE claim = $mine``, so a worker that outlived its lease cannot
overwrite a later attempt. At least once: timeouts, connection errors, 408, 429 and 5xx
are tried again after 5 s, doubling to at most 5 min with jitter, or after what the
receiver asked (``Retry-After``, Discord's and Telegram's ``retry_after``, at most an
hour); other 4xx are permanent and recorded with the exact error; after 48 h the row
expires and says so. The Idempotency-Key is the row's, the same on every attempt.

Rate limits: a receiver of a rate-limited type (Slack, Discord, Teams, Telegram) gets at
most one message per its spacing; ``delivery_pacing`` holds when it may next be sent to
(pushed further by a Retry-After), and rows of a receiver that must wait are not even
claimed, so a storm never loops on 429s. Every delivery runs in its own task with a
timeout, so one hanging receiver holds one slot and delays no other channel.

NOTIFY is only a wake-up: the worker also polls every second. All time decisions use the
injected clock, so tests can run hours of backoff in an instant.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from core.dbrole import create_app_pool
from core.problems import DATABASE_ERRORS
from core.prometheus import Metric, render, sample
from notifier import channels
from notifier.base import Blindness, Notice, Settings, Transport, TransportError

from . import retention
from .admin import serve_admin
from .crypto import EnvelopeError, Keyring, LiveKeyring, live_keyring
from .delivery import Target, attempt, open_secret, subscriber_attempt

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=45)
GIVE_UP_AFTER = timedelta(hours=48)
FIRST_RETRY_SECONDS = 5.0
MAX_RETRY_SECONDS = 300.0
POLL_SECONDS = 1.0
EVENT_BATCH = 1000
EVENTS_LOCK = 0x6C617375  # one event reader at a time
PER_RECEIVER = 8  # deliveries in flight to one receiver (a host, or the SMTP server)
EXPIRE_EVERY = timedelta(minutes=1)
OUTCOMES = ("delivered", "failed", "expired", "retry")

Clock = Callable[[], datetime]
# What a lost or unusable database connection raises; the loop retries, the lease returns rows.
DB_ERRORS = DATABASE_ERRORS


def utcnow() -> datetime:
    return datetime.now(UTC)


def backoff(attempts: int, rng: random.Random) -> float:
    """Seconds before the next try after `attempts` failed ones: 5 s doubling, capped at
    5 min, less up to 20% of jitter (so retries of a storm spread out)."""
    base = min(FIRST_RETRY_SECONDS * 2.0 ** max(0, attempts - 1), MAX_RETRY_SECONDS)
    return float(base * (1.0 - 0.2 * rng.random()))


# The last ping comes with the event. What opened it: a failure signal at that instant
# (the ingest emits 'failed' then 'incident_opened' at the same time), with its exit
# status, or a run past its maxRuntimeSec ('timed_out', likewise); otherwise missed
# deadlines, the first of them the down period's 'down' event
# (the latest one up to the opening: a threshold above 1 opens later).
_OPEN = """
INSERT INTO incidents (org_id, monitor_id, opened_at, last_ping_at, expected_at, cause,
                       exit_status)
SELECT m.org_id, m.id, $2, $3,
       CASE WHEN f.kind IS NULL THEN
           (SELECT max(e.occurred_at) FROM monitor_events e
            WHERE e.monitor_id = $1 AND e.kind = 'down' AND e.occurred_at <= $2
              AND ($3::timestamptz IS NULL OR e.occurred_at > $3)) END,
       coalesce(f.kind, 'missed'), f.exit_status
FROM monitors m
LEFT JOIN LATERAL (
    SELECT CASE e.kind WHEN 'failed' THEN 'failed' ELSE 'timeout' END AS kind, e.exit_status
    FROM monitor_events e
    WHERE e.monitor_id = $1 AND e.kind IN ('failed', 'timed_out') AND e.occurred_at = $2
    ORDER BY e.id DESC LIMIT 1
) f ON true
WHERE m.id = $1
ON CONFLICT (monitor_id) WHERE resolved_at IS NULL DO NOTHING
RETURNING id
"""
_RESOLVE = """
UPDATE incidents SET resolved_at = greatest($2, opened_at), resolved_by = $3
WHERE monitor_id = $1 AND resolved_at IS NULL
RETURNING id
"""
# What closes an incident, how it is told, and who hears of it: a ping is a recovery
# (channels and subscribers); a pause closes it without one (channels only: subscribers
# are told of outages and recoveries, and a pause is neither).
_CLOSES = {"incident_resolved": ("ping", "recovery"), "incident_paused": ("pause", "closed")}
# One row per channel of the monitor, one for its alertEmail, one per confirmed subscriber
# of a public status page that shows it; a repeat does nothing.
_ENQUEUE = """
INSERT INTO notifications (org_id, monitor_id, incident_id, channel_id, channel_type, address,
                           channel_ref, kind, next_attempt_at, created_at, subscriber_id)
SELECT r.org_id, r.monitor_id, $1::bigint, r.channel_id, r.channel_type, r.address,
       r.channel_ref, $3::text, $4::timestamptz, $4::timestamptz, NULL::bigint
FROM monitor_alert_routes r
WHERE r.monitor_id = $2
UNION ALL
SELECT sp.org_id, spm.monitor_id, $1::bigint, NULL, 'email', s.email, 'subscriber:' || s.id,
       $3::text, $4::timestamptz, $4::timestamptz, s.id
FROM status_page_monitors spm
JOIN status_pages sp ON sp.id = spm.page_id AND sp.public
JOIN subscribers s ON s.page_id = sp.id AND s.confirmed_at IS NOT NULL
WHERE spm.monitor_id = $2 AND $3::text IN ('alert', 'recovery')
ON CONFLICT (incident_id, channel_ref, kind) WHERE incident_id IS NOT NULL DO NOTHING
"""
# lastseen's own trouble (ingest/sight.py): a blind period of the cluster is told once,
# when its first row appears, and once more when the last of its rows has ended, to the
# owners of every organisation that has monitors and to every channel marked for system
# alerts. A period whose ingest process died open is ended when its membership expires.
_BLIND_ORPHANS = """
UPDATE blind_periods b SET ended_at = now()
WHERE b.ended_at IS NULL AND NOT EXISTS (
    SELECT 1 FROM ingest_members m WHERE m.owner = b.owner AND m.expires_at > now())
"""
_ENQUEUE_SYSTEM = """
INSERT INTO notifications (org_id, monitor_id, incident_id, channel_id, channel_type, address,
                           channel_ref, kind, next_attempt_at, created_at, blind_id)
SELECT u.org_id, NULL::bigint, NULL::bigint, NULL::bigint, 'email', u.email,
       'email:' || u.email, $2::text,
       $3::timestamptz, $3::timestamptz, $1::bigint
FROM users u
WHERE u.role = 'owner' AND EXISTS (SELECT 1 FROM monitors m WHERE m.org_id = u.org_id)
UNION ALL
SELECT c.org_id, NULL, NULL, c.id, c.type, NULL, 'channel:' || c.id, $2::text,
       $3::timestamptz, $3::timestamptz, $1::bigint
FROM channels c
WHERE c.system_alerts
ON CONFLICT (blind_id, channel_ref, kind) WHERE blind_id IS NOT NULL DO NOTHING
"""
_RECEIVER = "coalesce(c.receiver, n.channel_type)"
_CANDIDATES = f"""
SELECT n.id, n.channel_ref, n.channel_type, {_RECEIVER} AS receiver
FROM notifications n LEFT JOIN channels c ON c.id = n.channel_id
WHERE ((n.status = 'pending' AND n.next_attempt_at <= $1)
       OR (n.status = 'delivering' AND n.claimed_until <= $1))
  AND NOT EXISTS (SELECT 1 FROM delivery_pacing p
                  WHERE p.channel_ref = n.channel_ref AND p.next_at > $1)
  AND NOT ({_RECEIVER} = ANY($3::text[]))
ORDER BY n.next_attempt_at, n.id
LIMIT $2
FOR UPDATE OF n SKIP LOCKED
"""
# Rows still queued after GIVE_UP_AFTER end, whatever happened to their attempts (a row
# whose delivery kills the worker every time would otherwise be re-claimed forever).
_EXPIRE = """
UPDATE notifications SET status = 'expired', finished_at = $1, claim = NULL,
       claimed_until = NULL,
       last_error = 'gave up after 48 h; last error: ' || coalesce(last_error, 'none recorded')
WHERE status IN ('pending', 'delivering') AND created_at < $2
  AND (status = 'pending' OR claimed_until <= $1)
"""
_CLAIMED = """
UPDATE notifications n SET status = 'delivering', claim = $2, claimed_until = $3,
       attempts = attempts + 1
WHERE n.id = ANY($1::bigint[])
RETURNING n.id, n.org_id, n.monitor_id, n.incident_id, n.channel_id, n.channel_type,
          n.address, n.channel_ref, n.kind, n.idempotency_key, n.attempts, n.created_at,
          n.claim, n.subscriber_id,
          (SELECT p.slug FROM subscribers s JOIN status_pages p ON p.id = s.page_id
           WHERE s.id = n.subscriber_id) AS page_slug,
          (SELECT p.title FROM subscribers s JOIN status_pages p ON p.id = s.page_id
           WHERE s.id = n.subscriber_id) AS page_title,
          (SELECT c.config FROM channels c WHERE c.id = n.channel_id) AS config,
          (SELECT c.secret_envelope FROM channels c WHERE c.id = n.channel_id) AS secret_envelope,
          (SELECT c.receiver FROM channels c WHERE c.id = n.channel_id) AS channel_receiver,
          (SELECT m.name FROM monitors m WHERE m.id = n.monitor_id) AS monitor_name,
          (SELECT i.opened_at FROM incidents i WHERE i.id = n.incident_id) AS opened_at,
          (SELECT i.resolved_at FROM incidents i WHERE i.id = n.incident_id) AS resolved_at,
          (SELECT i.last_ping_at FROM incidents i WHERE i.id = n.incident_id) AS last_ping_at,
          (SELECT i.expected_at FROM incidents i WHERE i.id = n.incident_id) AS expected_at,
          (SELECT i.resolved_by FROM incidents i WHERE i.id = n.incident_id) AS resolved_by,
          (SELECT i.cause FROM incidents i WHERE i.id = n.incident_id) AS cause,
          (SELECT i.exit_status FROM incidents i WHERE i.id = n.incident_id) AS exit_status,
          n.blind_id,
          (SELECT to_jsonb(b) FROM blind_periods b WHERE b.id = n.blind_id) AS blindness
"""
_PACE = """
INSERT INTO delivery_pacing (channel_ref, next_at)
SELECT * FROM unnest($1::text[], $2::timestamptz[])
ON CONFLICT (channel_ref)
DO UPDATE SET next_at = greatest(delivery_pacing.next_at, EXCLUDED.next_at)
"""


class Worker:
    """Turns events into incidents and delivers the outbox. Several may run at once."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        keyring: Keyring | LiveKeyring,
        transport: Transport,
        *,
        clock: Clock = utcnow,
        rng: random.Random | None = None,
        concurrency: int = 32,
        retain_for: retention.Periods | None = None,
    ) -> None:
        self.pool = pool
        self.retain_for = retain_for  # None: it deletes nothing (control/retention.py)
        self._retained_at: datetime | None = None
        self.keys = live_keyring(keyring)  # `keys rotate` needs no restart
        self.transport = transport
        self.clock = clock
        self.rng = rng or random.Random()
        self.concurrency = concurrency
        self._inflight: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._per_receiver: Counter[str] = Counter()  # deliveries in flight per receiver
        self._receiver_of: dict[int, str] = {}  # notification id -> its receiver
        self._expired_at: datetime | None = None
        # For /metrics (control/admin.py): outcomes of deliveries, and what retention did.
        self.outcomes: Counter[str] = Counter({o: 0 for o in OUTCOMES})
        self.retained: Counter[str] = Counter({k: 0 for k in retention.KINDS})
        self.retention_runs = 0
        self.retention_last: datetime | None = None  # when the last run ended
        self.retention_seconds = 0.0  # how long it took

    @property
    def keyring(self) -> Keyring:
        return self.keys.get()

    # -- events -> incidents ---------------------------------------------------------

    async def process_events(self) -> int:
        """Handle unprocessed events in order; returns how many were handled."""
        now = self.clock()
        queued = 0
        async with self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", EVENTS_LOCK):
                return 0  # another worker is on it
            events = await conn.fetch(
                "SELECT id, monitor_id, kind, occurred_at, last_seen_at FROM monitor_events"
                " WHERE processed_at IS NULL ORDER BY id LIMIT $1",
                EVENT_BATCH,
            )
            for event in events:
                monitor_id, at = event["monitor_id"], event["occurred_at"]
                if event["kind"] == "incident_opened":
                    kind = "alert"
                    incident = await conn.fetchval(_OPEN, monitor_id, at, event["last_seen_at"])
                elif event["kind"] in _CLOSES:
                    by, kind = _CLOSES[event["kind"]]
                    incident = await conn.fetchval(_RESOLVE, monitor_id, at, by)
                else:
                    continue
                if incident is not None:
                    done = await conn.execute(_ENQUEUE, incident, event["monitor_id"], kind, now)
                    queued += int(done.split()[-1])
            if events:
                await conn.execute(
                    "UPDATE monitor_events SET processed_at = $2 WHERE id = ANY($1::bigint[])",
                    [e["id"] for e in events],
                    now,
                )
            queued += await self._blindness(conn, now)
        if queued:
            self._wake.set()
        return len(events)

    async def _blindness(self, conn: asyncpg.Connection, now: datetime) -> int:
        """Tell the cluster's blind periods: once when one begins (the first row of an
        episode: rows not yet told of their end), once when every row has ended."""
        unsent = (
            "SELECT id, ended_at, notified FROM blind_periods WHERE NOT end_notified ORDER BY id"
        )
        rows = await conn.fetch(unsent)  # none, nearly always: one cheap read a round
        if not rows:
            return 0
        still_open = any(r["ended_at"] is None for r in rows)
        if still_open and await conn.execute(_BLIND_ORPHANS) != "UPDATE 0":
            rows = await conn.fetch(unsent)  # a dead process's period ended meanwhile
        queued = 0
        told = [r["id"] for r in rows if r["notified"]]
        fresh = [r["id"] for r in rows if not r["notified"]]
        if fresh:
            if not told:
                done = await conn.execute(_ENQUEUE_SYSTEM, fresh[0], "blind", now)
                queued += int(done.split()[-1])
                told = fresh[:1]
            await conn.execute(
                "UPDATE blind_periods SET notified = true WHERE id = ANY($1::bigint[])", fresh
            )
        if all(r["ended_at"] is not None for r in rows):
            done = await conn.execute(_ENQUEUE_SYSTEM, told[0], "sighted", now)
            queued += int(done.split()[-1])
            await conn.execute(
                "UPDATE blind_periods SET end_notified = true WHERE id = ANY($1::bigint[])",
                [r["id"] for r in rows],
            )
        return queued

    # -- the outbox ------------------------------------------------------------------

    async def claim(self, limit: int) -> list[asyncpg.Record]:
        """Claim up to `limit` due notifications: at most one per paced receiver, and at
        most PER_RECEIVER in flight per receiver (rows of a receiver at its limit are not
        even looked at, so one that hangs cannot hold the slots of the others)."""
        now = self.clock()
        token = uuid.uuid4()
        full = [key for key, n in self._per_receiver.items() if n >= PER_RECEIVER]
        async with self.pool.acquire() as conn, conn.transaction():
            if self._expired_at is None or now - self._expired_at >= EXPIRE_EVERY:
                await conn.execute(_EXPIRE, now, now - GIVE_UP_AFTER)
                self._expired_at = now
            candidates = await conn.fetch(_CANDIDATES, now, limit * 4, full)
            take: list[int] = []
            paced: dict[str, datetime] = {}
            receivers: dict[int, str] = {}
            taking = Counter(self._per_receiver)
            for row in candidates:
                if taking[row["receiver"]] >= PER_RECEIVER:
                    continue
                spacing = channels.spacing(row["channel_type"])
                if spacing > 0:
                    if row["channel_ref"] in paced:
                        continue
                    paced[row["channel_ref"]] = now + timedelta(seconds=spacing)
                take.append(row["id"])
                receivers[row["id"]] = row["receiver"]
                taking[row["receiver"]] += 1
                if len(take) >= limit:
                    break
            if not take:
                return []
            claimed: list[asyncpg.Record] = await conn.fetch(_CLAIMED, take, token, now + LEASE)
            if paced:
                await conn.execute(_PACE, list(paced), list(paced.values()))
        for row in claimed:
            self._receiver_of[row["id"]] = key = receivers[row["id"]]
            self._per_receiver[key] += 1
        return claimed

    def _finished(self, row: Mapping[str, Any]) -> None:
        """A claimed row's delivery is over (landed, failed, released or abandoned)."""
        key = self._receiver_of.pop(row["id"], None)
        if key is not None:
            self._per_receiver[key] -= 1
            if self._per_receiver[key] <= 0:
                del self._per_receiver[key]

    async def deliver(self, row: Mapping[str, Any]) -> None:
        """One attempt at a claimed notification, and its outcome recorded."""
        notice = Notice(
            kind=row["kind"],
            monitor_id=row["monitor_id"] or 0,  # 0: a system notice (blindness)
            monitor_name=row["monitor_name"]
            or ("" if row["blind_id"] is not None else f"monitor {row['monitor_id']}"),
            incident_id=row["incident_id"],
            opened_at=row["opened_at"],
            resolved_at=row["resolved_at"],
            sent_at=self.clock(),
            last_ping_at=row["last_ping_at"],
            expected_at=row["expected_at"],
            resolved_by=row["resolved_by"],
            cause=row["cause"] or "missed",
            exit_status=row["exit_status"],
            idempotency_key=str(row["idempotency_key"]),
            blindness=_blindness(row["blindness"]),
        )
        if row["subscriber_id"] is not None:
            error = await subscriber_attempt(self.transport, self.keyring, row, notice)
        else:
            target = Target.of(row)
            if target.channel_id is not None and row["channel_receiver"] is None:
                await self._learn_receiver(row["id"], target)
            error = await attempt(self.transport, self.keyring, target, notice)
        await self.record(row, error)

    async def _learn_receiver(self, row_id: int, target: Target) -> None:
        """Fill in the receiver of a channel created before it was recorded (version 7);
        this delivery now counts against it."""
        assert target.channel_id is not None
        try:
            secret = open_secret(
                self.keyring, target.secret_envelope, target.org_id, target.channel_id
            )
        except (EnvelopeError, ValueError):
            return
        key = channels.receiver(target.channel_type, target.config, secret)
        old = self._receiver_of.get(row_id)
        if old is not None and old != key:
            self._finished({"id": row_id})
            self._receiver_of[row_id] = key
            self._per_receiver[key] += 1
        await self.pool.execute(
            "UPDATE channels SET receiver = $2 WHERE id = $1 AND receiver IS NULL",
            target.channel_id, key,
        )  # fmt: skip

    async def record(self, row: Mapping[str, Any], error: TransportError | None) -> None:
        now = self.clock()
        args: list[Any]
        outcome = "delivered" if error is None else "failed" if error.permanent else "retry"
        if error is None:
            sql = ("UPDATE notifications SET status = 'delivered', delivered_at = $3,"
                   " finished_at = $3, last_error = NULL")  # fmt: skip
            args = [now]
        elif error.permanent:
            sql = "UPDATE notifications SET status = 'failed', finished_at = $3, last_error = $4"
            args = [now, error.message]
        else:
            wait = error.retry_after
            if wait is None:
                wait = backoff(row["attempts"], self.rng)
            when = now + timedelta(seconds=wait)
            if when - row["created_at"] > GIVE_UP_AFTER:
                sql = ("UPDATE notifications SET status = 'expired', finished_at = $3,"
                       " last_error = $4")  # fmt: skip
                args = [now, f"gave up after 48 h; last error: {error.message}"]
                outcome = "expired"
            else:
                sql = ("UPDATE notifications SET status = 'pending', next_attempt_at = $3,"
                       " last_error = $4")  # fmt: skip
                args = [when, error.message]
        sql += ", claim = NULL, claimed_until = NULL WHERE id = $1 AND claim = $2"
        async with self.pool.acquire() as conn, conn.transaction():
            done = await conn.execute(sql, row["id"], row["claim"], *args)
            if error is not None and error.retry_after is not None:
                until = now + timedelta(seconds=error.retry_after)
                await conn.execute(_PACE, [row["channel_ref"]], [until])
        if done == "UPDATE 1":
            self.outcomes[outcome] += 1
        else:
            log.warning(
                "notification %d: claim lost (lease ran out); outcome not recorded", row["id"]
            )

    async def run_once(self) -> int:
        """Events, then every due delivery, awaited (for tests and `--once`)."""
        await self.process_events()
        delivered = 0
        while rows := await self.claim(self.concurrency):
            await asyncio.gather(*(self._guarded(row) for row in rows))
            delivered += len(rows)
        return delivered

    async def retain(self) -> dict[str, int] | None:
        """Delete what is past its retention period, at most once per retention.EVERY."""
        now = self.clock()
        if self.retain_for is None or (
            self._retained_at is not None and now - self._retained_at < retention.EVERY
        ):
            return None
        self._retained_at = now
        started = time.monotonic()
        deleted = await retention.prune(self.pool, self.retain_for, now)
        self.retention_seconds = time.monotonic() - started
        self.retention_runs += 1
        self.retention_last = self.clock()
        self.retained.update(deleted)
        return deleted

    def metrics(self) -> str:
        """This worker's /metrics, in Prometheus' text format."""
        last = self.retention_last.timestamp() if self.retention_last else 0
        return render([
            (Metric("lastseen_worker_deliveries_total", "counter",
                    "Delivery attempts recorded, by outcome (retry: another attempt is due)"),
             [sample("lastseen_worker_deliveries_total", n, outcome=o)
              for o, n in sorted(self.outcomes.items())]),
            (Metric("lastseen_worker_deliveries_in_flight", "gauge",
                    "Deliveries this worker has claimed and not finished"),
             [sample("lastseen_worker_deliveries_in_flight", len(self._inflight))]),
            (Metric("lastseen_retention_deleted_total", "counter",
                    "Rows deleted by retention (LASTSEEN_RETAIN_*), by kind"),
             [sample("lastseen_retention_deleted_total", n, kind=k.replace(" ", "_"))
              for k, n in sorted(self.retained.items())]),
            (Metric("lastseen_retention_runs_total", "counter", "Retention runs (hourly)"),
             [sample("lastseen_retention_runs_total", self.retention_runs)]),
            (Metric("lastseen_retention_last_run_timestamp_seconds", "gauge",
                    "When the last retention run ended (0: none yet)"),
             [sample("lastseen_retention_last_run_timestamp_seconds", last)]),
            (Metric("lastseen_retention_last_run_duration_seconds", "gauge",
                    "How long the last retention run took"),
             [sample("lastseen_retention_last_run_duration_seconds",
                     round(self.retention_seconds, 6))]),
        ])  # fmt: skip

    def health(self) -> tuple[bool, dict[str, object]]:
        last = self.retention_last
        return True, {"ok": True, "inFlight": len(self._inflight),
                      "retentionLastRun": last.isoformat() if last else None}  # fmt: skip

    # -- the long-running loop ---------------------------------------------------------

    async def run(self, stop: asyncio.Event, dsn: str) -> None:
        """Until `stop`: LISTEN for wake-ups, handle events, keep deliveries flowing.

        On stop, no new claims; deliveries in flight get a few seconds, then are
        cancelled and released back to the queue.
        """
        listener: asyncpg.Connection | None = None
        try:
            while not stop.is_set():
                if listener is None or listener.is_closed():
                    listener = await self._listen(dsn)
                try:
                    await self.process_events()
                    await self.retain()
                    free = self.concurrency - len(self._inflight)
                    if free > 0:
                        for row in await self.claim(free):
                            task = asyncio.create_task(self._guarded(row))
                            self._inflight.add(task)
                            task.add_done_callback(self._done)
                except DB_ERRORS as exc:
                    log.warning("database unavailable (%s); retrying", type(exc).__name__)
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_SECONDS):
                        waits = [asyncio.ensure_future(self._wake.wait()),
                                 asyncio.ensure_future(stop.wait())]  # fmt: skip
                        try:
                            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                        finally:
                            for w in waits:
                                w.cancel()
        finally:
            await self._drain()
            if listener is not None and not listener.is_closed():
                await listener.close()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()  # a slot is free

    async def _guarded(self, row: Mapping[str, Any]) -> None:
        try:
            await self.deliver(row)
        except asyncio.CancelledError:
            await asyncio.shield(self._release(row))
            raise
        except DB_ERRORS as exc:
            # The outcome could not be written: the lease returns the row to the queue.
            log.warning("notification %d: outcome not recorded (%s)", row["id"], type(exc).__name__)
        except Exception as exc:  # a bug: recorded as the row's error, never lost silently
            log.error("notification %d: internal error (%s)", row["id"], type(exc).__name__)
            error = TransportError(f"internal error ({type(exc).__name__})")
            with contextlib.suppress(*DB_ERRORS):
                await self.record(row, error)
        finally:
            self._finished(row)

    async def _release(self, row: Mapping[str, Any]) -> None:
        with contextlib.suppress(Exception):
            await self.pool.execute(
                "UPDATE notifications SET status = 'pending', claim = NULL, claimed_until = NULL,"
                " next_attempt_at = $3 WHERE id = $1 AND claim = $2",
                row["id"], row["claim"], self.clock(),
            )  # fmt: skip

    async def _drain(self, grace: float = 5.0) -> None:
        if not self._inflight:
            return
        _, pending = await asyncio.wait(set(self._inflight), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def _listen(self, dsn: str) -> asyncpg.Connection | None:
        try:
            conn = await asyncpg.connect(dsn)
            for channel in ("lastseen_events", "lastseen_notifications"):
                await conn.add_listener(channel, lambda *_: self._wake.set())
            return conn
        except DB_ERRORS:
            return None  # polling still runs; try again next round


def _blindness(value: str | Mapping[str, Any] | None) -> Blindness | None:
    """A blind period's row (JSON) as a system notice tells it; None for the others."""
    if value is None:
        return None
    row = json.loads(value) if isinstance(value, str) else value

    def at(name: str) -> datetime | None:
        text = row.get(name)
        return datetime.fromisoformat(text) if text else None

    since, detected = at("since"), at("detected_at")
    assert since is not None and detected is not None
    return Blindness(
        since=since, detected_at=detected, late=row["late"], heard=row["heard"],
        back_at=at("back_at") or at("ended_at"), unknown=row["unknown_peak"],
    )  # fmt: skip


async def main(
    dsn: str,
    keyring: Keyring | LiveKeyring,
    settings: Settings,
    periods: retention.Periods | None = None,
    db_timeout: float = 10.0,
    admin: tuple[str, int] | None = None,
) -> None:
    """`lastseen worker`: run until SIGTERM or SIGINT (SIGHUP: read the keyring again);
    `periods`: what it deletes when (control/retention.py; None: the defaults);
    `db_timeout`: the most a database call may take (LASTSEEN_DB_TIMEOUT_SECONDS);
    `admin`: where /metrics and /healthz are served (LASTSEEN_WORKER_ADMIN_LISTEN)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    keys = live_keyring(keyring)
    loop.add_signal_handler(signal.SIGHUP, keys.reload)
    # Connections opened up front: a worker that had to connect while recording its first
    # outcomes left each 2xx unrecorded for longer, and a crash in that window means the
    # notification goes out again (docs/reliability.md, scenario 8).
    pool = await create_app_pool(dsn, min_size=8, max_size=8, command_timeout=db_timeout)
    try:
        async with Transport(settings) as transport:
            worker = Worker(pool, keys, transport, retain_for=periods or retention.Periods())
            server = None
            if admin is not None:
                try:
                    server = await serve_admin(*admin, worker.metrics, worker.health)
                except OSError as exc:  # alerts matter more than their metrics: go on
                    log.error("no /metrics: cannot listen on %s:%d (%s); set"
                              " LASTSEEN_WORKER_ADMIN_LISTEN", *admin, exc.strerror)  # fmt: skip
            try:
                await worker.run(stop, dsn)
            finally:
                if server is not None:
                    server.close()
    finally:
        await pool.close()
