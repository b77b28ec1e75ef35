"""The ingest's change feed: configuration changes from PostgreSQL into the table.

The feed LISTENs on ``lastseen_monitors`` and, woken by a NOTIFY, reads every change
since its previous snapshot (``xmin``) at once; it also does so every ``poll_interval``
in case a NOTIFY was missed, trims the deletion log once an hour, and after a reconnect
resyncs in full (NOTIFYs sent while it was away are gone). Every change applied wakes the
deadline scheduler, since a deadline may have moved.

Reading every change since the previous snapshot (not only the notified monitors) makes
"applied" exact: after a read, every change visible in its snapshot is in the table. The
feed says so in ``ingest_members.applied`` (migration 0012), and the control plane waits
for that before it answers a change (``control/applied.py``): a monitor the API says
exists is pingable on every process.
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
        self.owner: str | None = None  # this process in ingest_members, to say what it applied
        self.applied = ""  # the snapshot of the last load or read, once said

    async def load(self, conn: asyncpg.Connection) -> str:
        """Every monitor into the table (COPY), and the snapshot to poll changes from;
        returns the snapshot. Until it is said applied (the caller's to say, once the
        table answers for it), this process counts as having applied nothing."""
        db = self.db
        if self.owner is not None:
            await db.call(store.mark_applied, conn, self.owner, None, db.timeout)
            self.applied = ""
        snapshot, _rows, refused = await db.call(
            store.load, conn, self.table, self.clock.now(), db.timeout, limit=LOAD_LIMIT
        )
        for monitor_id, reason in refused:
            log.error("monitor %s not loaded: %s", monitor_id, reason)
        self.xmin = snapshot.xmin
        return snapshot.snapshot

    async def _say_applied(self, conn: asyncpg.Connection, snapshot: str) -> None:
        if self.owner is not None and snapshot != self.applied:
            await self.db.call(store.mark_applied, conn, self.owner, snapshot, self.db.timeout)
            self.applied = snapshot

    def apply(self, rows: Sequence[store.MonitorRow]) -> None:
        now = self.clock.now()
        upsert = self.table.upsert
        for r in rows:
            try:
                upsert(r.id, r.digest, r.interval, r.grace, r.threshold, r.paused, now,
                       r.state, r.misses, r.last_seen, r.incident_open, r.recovery,
                       r.max_runtime, r.started, r.expected())  # fmt: skip
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
        wakes = [trio.Event()]

        def on_notify(_c: object, _pid: int, _channel: str, _payload: str) -> None:
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
            if wakes[0].is_set():  # a change was committed: read it (and all before it)
                wakes[0] = trio.Event()
                await self._poll(conn)

    async def _poll(self, conn: asyncpg.Connection) -> None:
        changed, deleted, snapshot = await self.db.call(
            store.changes_since, conn, self.xmin, self.db.timeout
        )
        # Deletions first: a monitor deleted and recreated keeps nothing of the old one.
        present = {r.id for r in changed}
        for monitor_id in deleted:
            if monitor_id not in present:
                self.table.remove(monitor_id)
        self.apply(changed)
        self.xmin = snapshot.xmin
        self.changed()
        await self._say_applied(conn, snapshot.snapshot)

    async def _resync(self, conn: asyncpg.Connection) -> None:
        self.table.begin_sync()
        snapshot = await self.load(conn)
        removed = self.table.end_sync()
        log.info("resynced %d monitors (%d removed)", len(self.table), len(removed))
        self.changed()
        await self._say_applied(conn, snapshot)
