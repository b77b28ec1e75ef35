"""The ingest's change feed: configuration changes from PostgreSQL into the table.

The feed LISTENs on ``lastseen_monitors`` (the payload is a monitor id) and applies each
change at once; it also polls every ``poll_interval`` for changes since the last
snapshot (``xmin``) in case a NOTIFY was missed, trims the deletion log once an hour, and
after a reconnect resyncs in full (NOTIFYs sent while it was away are gone). Every
change applied wakes the deadline scheduler, since a deadline may have moved.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import asyncpg
import trio

from core import DeadlineTable

from . import store
from .clock import Clock
from .database import DB_ERRORS, Database, why
from .protocol import SECONDS

log = logging.getLogger(__name__)

LOAD_LIMIT = 120 * SECONDS  # a full load; each batch within it still has db_timeout
PRUNE_INTERVAL = 3600 * SECONDS  # how often the deletion log is trimmed


class ChangeFeed:
    def __init__(
        self,
        db: Database,
        table: DeadlineTable,
        clock: Clock,
        changed: Callable[[], None],
        database_up: Callable[[bool], None],
        poll_interval: float = 5 * SECONDS,
    ) -> None:
        self.db = db
        self.table = table
        self.clock = clock
        self.changed = changed
        self.database_up = database_up
        self.poll_interval = poll_interval
        self.xmin = ""

    async def load(self, conn: asyncpg.Connection) -> None:
        """Every monitor into the table (COPY), and the snapshot to poll changes from."""
        db = self.db
        self.xmin, _rows, refused = await db.call(
            store.load, conn, self.table, self.clock.now(), db.timeout, limit=LOAD_LIMIT
        )
        for monitor_id, reason in refused:
            log.error("monitor %s not loaded: %s", monitor_id, reason)

    def apply(self, rows: Sequence[store.MonitorRow]) -> None:
        now = self.clock.now()
        upsert = self.table.upsert
        for r in rows:
            try:
                upsert(r.id, r.digest, r.interval, r.grace, r.threshold, r.paused, now,
                       r.state, r.misses, r.last_seen, r.incident_open)  # fmt: skip
            except ValueError as exc:
                log.error("monitor %s not loaded: %s", r.id, exc)

    async def run(self) -> None:
        """Follow changes until cancelled, reconnecting (and resyncing) after failures."""
        resync = False
        backoff = 0.5
        while True:
            conn = None
            try:
                conn = await self.db.connect("lastseen-ingest-follow")
                await self._follow_on(conn, resync=resync)
            except DB_ERRORS as exc:
                self.database_up(False)
                log.warning("change feed lost (%s); reconnecting", why(exc))
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            else:
                backoff = 0.5
            finally:
                self.db.drop(conn)
            resync = True

    async def _follow_on(self, conn: asyncpg.Connection, *, resync: bool) -> None:
        """LISTEN on one connection and apply changes until it fails."""
        db = self.db
        notified: set[int] = set()
        wakes = [trio.Event()]

        def on_notify(_c: object, _pid: int, _channel: str, payload: str) -> None:
            if payload.isdigit():
                notified.add(int(payload))
            wakes[0].set()

        await db.call(conn.add_listener, "lastseen_monitors", on_notify)
        if resync:
            # NOTIFYs sent while we were away are gone: compare everything once.
            await self._resync(conn)
        next_poll = next_prune = trio.current_time()
        while True:
            if trio.current_time() >= next_prune:
                # The deletion log only bridges missed NOTIFYs; a day of it is plenty.
                await db.call(store.prune_deletions, conn, db.timeout)
                next_prune = trio.current_time() + PRUNE_INTERVAL
            if trio.current_time() >= next_poll:
                await self._poll(conn)
                next_poll = trio.current_time() + self.poll_interval
            with trio.move_on_at(next_poll):
                await wakes[0].wait()
            wakes[0] = trio.Event()
            if notified:
                ids = sorted(notified)
                notified.clear()
                await self._apply_ids(conn, ids)

    async def _apply_ids(self, conn: asyncpg.Connection, ids: list[int]) -> None:
        rows = await self.db.call(store.monitors_by_id, conn, ids, self.db.timeout)
        self.apply(rows)
        for monitor_id in set(ids) - {r.id for r in rows}:
            self.table.remove(monitor_id)
        self.changed()

    async def _poll(self, conn: asyncpg.Connection) -> None:
        changed, deleted, xmin = await self.db.call(
            store.changes_since, conn, self.xmin, self.db.timeout
        )
        # Deletions first: a monitor deleted and recreated keeps nothing of the old one.
        present = {r.id for r in changed}
        for monitor_id in deleted:
            if monitor_id not in present:
                self.table.remove(monitor_id)
        self.apply(changed)
        self.xmin = xmin
        self.changed()

    async def _resync(self, conn: asyncpg.Connection) -> None:
        self.table.begin_sync()
        await self.load(conn)
        removed = self.table.end_sync()
        log.info("resynced %d monitors (%d removed)", len(self.table), len(removed))
        self.changed()
