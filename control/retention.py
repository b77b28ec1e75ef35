"""Retention (issue 14): what the alert worker deletes, and when.

Once an hour each worker deletes, in batches of BATCH rows (each its own short
statement: no long lock, no long transaction):

- events the worker has handled (``processed_at`` set) older than
  ``LASTSEEN_RETAIN_EVENTS_DAYS`` (90: the longest timeline and the status pages' window;
  an event not yet handled is never deleted, whatever its age);
- notifications that are over (delivered, failed, expired) and finished longer ago than
  ``LASTSEEN_RETAIN_NOTIFICATIONS_DAYS`` (30: a month to read an incident's deliveries);
  those still queued are never deleted;
- check-ins (the ping history) older than ``LASTSEEN_RETAIN_PINGS_DAYS`` (90, besides
  the newest-per-monitor cap the ingest keeps), and those of monitors deleted lately
  (rows that raced their monitor's deletion: migration 0018);
- blind periods (``ingest/sight.py``) that ended and were told, after the events' period.

- audit log entries older than ``LASTSEEN_RETAIN_AUDIT_DAYS`` (400: the year that audits
  such as SOC 2 and ISO 27001 ask for, and a month for the audit itself), through
  ``prune_audit_log()`` (migration 0020): the log stays append-only for everyone, and no
  entry younger than 365 days can be deleted by anyone, this path included.

Kept: incidents (small, and what availability is computed from).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

log = logging.getLogger(__name__)

BATCH = 5_000
EVERY = timedelta(hours=1)
# A batch's statement may take this long, whatever LASTSEEN_DB_TIMEOUT_SECONDS bounds the
# worker's other calls to: deleting 5,000 rows of a large table is no alert's path.
STATEMENT_SECONDS = 60.0

_EVENTS = """
DELETE FROM monitor_events WHERE id IN (
    SELECT id FROM monitor_events WHERE processed_at IS NOT NULL AND occurred_at < $1
    ORDER BY id LIMIT $2)
"""
_NOTIFICATIONS = """
DELETE FROM notifications WHERE id IN (
    SELECT id FROM notifications
    WHERE status IN ('delivered', 'failed', 'expired') AND finished_at < $1
    ORDER BY id LIMIT $2)
"""
_PINGS = """
DELETE FROM pings WHERE id IN (
    SELECT id FROM pings WHERE received_at < $1 ORDER BY id LIMIT $2)
"""
# Blind periods (ingest/sight.py) told of their end, as old as the events.
_BLIND = """
DELETE FROM blind_periods WHERE id IN (
    SELECT id FROM blind_periods WHERE end_notified AND ended_at < $1 ORDER BY id LIMIT $2)
"""
# The only way an audit entry goes (migration 0020): old ones, in a batch, returns how many.
_AUDIT = "SELECT prune_audit_log($1, $2)"
# monitor_deletions holds a day of deletions (the ingest's change feed prunes it).
_ORPHAN_PINGS = """
DELETE FROM pings WHERE id IN (
    SELECT p.id FROM pings p JOIN monitor_deletions d ON d.monitor_id = p.monitor_id
    WHERE $1::timestamptz IS NOT NULL LIMIT $2)
"""


@dataclass(frozen=True)
class Periods:
    """How long each kind of row is kept."""

    events: timedelta = timedelta(days=90)
    notifications: timedelta = timedelta(days=30)
    pings: timedelta = timedelta(days=90)
    audit: timedelta = timedelta(days=400)  # never under 365 (the database refuses)


# What prune deletes, by kind (the keys of its result; the worker's metrics label them).
KINDS = ("events", "notifications", "pings", "blind periods", "orphan pings", "audit entries")


async def prune(pool: Any, periods: Periods, now: datetime) -> dict[str, int]:
    """Delete what is past its period; returns the rows deleted, by kind."""
    work = [
        ("events", _EVENTS, now - periods.events),
        ("notifications", _NOTIFICATIONS, now - periods.notifications),
        ("pings", _PINGS, now - periods.pings),
        ("blind periods", _BLIND, now - periods.events),
        ("orphan pings", _ORPHAN_PINGS, now),
        ("audit entries", _AUDIT, now - periods.audit),
    ]
    deleted: dict[str, int] = {}
    for kind, statement, cutoff in work:
        total = 0
        while True:
            if statement is _AUDIT:
                n = int(await pool.fetchval(statement, cutoff, BATCH, timeout=STATEMENT_SECONDS))
            else:
                done: str = await pool.execute(statement, cutoff, BATCH, timeout=STATEMENT_SECONDS)
                n = int(done.split()[-1])
            total += n
            if n < BATCH:
                break
        deleted[kind] = total
    if any(deleted.values()):
        log.info("retention: deleted %s", ", ".join(f"{n} {k}" for k, n in deleted.items()))
    return deleted
