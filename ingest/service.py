"""The ingest process: load, serve, keep deadlines, flush, follow changes, stop gracefully.

How this works
--------------
Pings never wait for PostgreSQL: they touch only the in-memory table. Four tasks run beside
the listener:

- the scheduler sleeps until the table's next deadline (at most a second; woken early when
  a configuration change may have moved one) and processes what is due;
- the flusher writes the dirty monitors and the events every ``flush_interval``; a failed
  flush keeps them (the table re-marks the rows, the events stay queued), so unflushed
  state is bounded by the number of monitors, not of pings. A ping that changes nothing
  but a last-seen time waits for the seen log's next row instead (``seen.py``, every
  ``seen_interval``): the database diet, one compact row per ~10 s instead of a row
  update per ping. Such a monitor stays marked in the table meanwhile (the flush leaves
  it there, the row takes it), so a flush costs nothing per ping;
- the change feed (``changefeed.py``) follows configuration changes into the table;
- the admin listener serves /metrics (``SIMPLE_METRICS``: one spec per single-valued
  metric), /healthz, and POST /handoff from the other ingest processes;
- the lease keeper (``leases.py``) renews this process's shards every quarter of a lease,
  gives back its excess when others join (flushing those shards first, then waking the
  others by NOTIFY), takes free or expired shards up to its share and loads them with
  the takeover amnesty, and refreshes who owns what for the outbox;
- the outbox (``handoff.py``) hands pings of foreign monitors to their owners.

Several processes (on one host or many) share one database: each judges only the shards
it holds leases on, and every flush is fenced by those leases (a flush for shards this
process no longer holds writes nothing of them, and they are released from the table).
One process alone holds every shard and behaves as it always did.

Its configuration is ``config.py``; every database call goes through ``database.py``, with
a timeout, and a flush runs shielded from shutdown, so a hung server blocks nothing
longer than that and a flush is never cut in half by a stop.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import trio
import trio_asyncio

from core import DeadlineTable
from core.records import DirtyRows, Event
from core.shards import SHARDS

from . import checkins, store
from ._fastpath import FastPath
from .changefeed import ChangeFeed
from .clock import Clock
from .config import IngestConfig, raise_fd_limit
from .database import DB_ERRORS, Database, why
from .forward import Upstream
from .handoff import SLACK, Outbox
from .leases import Fenced, Leases
from .listener import Listener, YieldBetweenBatches, open_listen_socket
from .metrics import FLUSH_BUCKETS, LAG_BUCKETS, Histogram, Metric, render, sample, serve_admin
from .protocol import ResponseCache
from .scheduler import Deadlines
from .seen import SeenWriter
from .seen import build as build_seen_row
from .sight import Sight

log = logging.getLogger(__name__)

HISTORY_SECONDS = 0.5  # how often check-ins are written to the ping history
HISTORY_BATCH = 2_000  # rows per statement
HAND_OVER_SECONDS = 3.0  # at a graceful stop, for relaying what waits to the new owners
# A seen-log row of more entries than this is made in a thread (ingest/seen.py).
SEEN_ROW_INLINE = 5_000
SEEN_PRUNE_SECONDS = 60.0  # the seen log's superseded rows are deleted at most this often


class Ingest:
    """One ingest process. run() it inside trio; request_stop() ends it gracefully."""

    def __init__(self, config: IngestConfig, clock: Clock | None = None) -> None:
        self.config = config
        self._clock = clock
        self.db = Database(config.database_url, config.db_timeout)
        # Empty until the initial load sizes the table for the monitors there are.
        self.table = DeadlineTable()
        self.history = checkins.History(keep=config.ping_history)
        self._history_prune_at = 0.0
        self.fast = FastPath(self.table, config.limits.max_head_bytes)
        self.responder = self._responder()
        self.feed: ChangeFeed | None = None
        self.listener: Listener | None = None
        self.yielder = YieldBetweenBatches()  # added to the loop by run(own_process=True)
        self.pending_events: list[Event] = []
        self.sight = Sight(config.sight)  # blindness: misses held, then written or undone
        self.detection_lag = Histogram(LAG_BUCKETS)
        self.flush_duration = Histogram(FLUSH_BUCKETS)
        self.flush_rows = 0
        self.flush_events = 0
        self.flush_failures = 0
        self.last_flush: float | None = None
        self.db_up = False
        self.port: int | None = None
        self.admin_port: int | None = None
        self.started_at: float | None = None
        self.loaded_at: float | None = None
        self._flush_conn: asyncpg.Connection | None = None
        self._flush_lock = trio.Lock()
        self._stop = trio.Event()
        self.deadlines: Deadlines | None = None
        self.leases: Leases | None = None
        self.outbox: Outbox | None = None
        self.lease_ttl = config.lease
        self.lease_steps = 0
        self.lease_failures = 0
        self.shards_taken = 0
        self.shards_lost = 0
        self.fenced_flushes = 0
        self.fenced_rows = 0
        self.ever_lost = False
        self.pauses = 0
        self._step_now = trio.Event()
        self._lease_scope = trio.CancelScope()
        self.seen = SeenWriter(config.seen_interval)
        self._next_seen_prune = 0.0

    @property
    def clock(self) -> Clock:
        assert self._clock is not None, "run() first"
        return self._clock

    def request_stop(self) -> None:
        self._stop.set()

    # -- load and follow

    async def _initial_load(self) -> None:
        backoff = 0.5
        db = self.db
        while True:
            conn = None
            try:
                conn = await db.connect("lastseen-ingest-load")
                assert self.leases is not None
                key = await db.call(store.cluster_key, conn, db.timeout)
                await db.call(store.end_blind_periods, conn, self.leases.owner, db.timeout)
                # The shards to judge first, so that the load judges only those.
                await self._step_leases(conn, initial=True)
                total = await db.call(store.count, conn, db.timeout)
                self.table = DeadlineTable(capacity=max(1024, int(total * 1.02) + 1024))
                self.table.release(s for s in range(SHARDS) if s not in self.leases.held)
                self.outbox = Outbox(self.leases.owner, key, lambda: self.table, self.clock)
                self.outbox.owners = await db.call(Leases.owners, conn)
                self.fast = FastPath(self.table, self.config.limits.max_head_bytes)
                self.responder = self._responder()
                started = time.perf_counter()
                self.feed = ChangeFeed(db, self.table, self.clock, self._changed, self._db_state,
                                       self.config.poll_interval)  # fmt: skip
                self.feed.owner = self.leases.owner
                await self.feed.load(conn)
                self.loaded_at = self.clock.now()
                self.db_up = True
                log.info(
                    "loaded %d monitors in %.2f s; judging %d of %d shards",
                    len(self.table), time.perf_counter() - started,
                    len(self.leases.held), SHARDS,
                )  # fmt: skip
                return
            except DB_ERRORS as exc:
                log.warning("database not reachable yet (%s); retrying", why(exc))
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                db.drop(conn)

    def _changed(self) -> None:
        """The change feed applied something: a deadline may have moved."""
        if self.deadlines is not None:
            self.deadlines.wake()

    def _db_state(self, up: bool) -> None:
        self.db_up = up

    # -- deadlines and flushing

    def _on_events(self, events: list[Event], now: float) -> None:
        """A scheduler round's events: admitted (misses held while blindness could be
        declared), blindness judged, what is past the window released to the flush."""
        sight, table = self.sight, self.table
        released = sight.admit(events, table)
        blind = sight.blind
        sight.judge(table, now)
        released += sight.release(now)
        for e in released:
            if e.kind == "down" or e.kind == "incident_opened":
                self.detection_lag.observe(max(0.0, now - e.at))
        self.pending_events.extend(released)
        if sight.blind != blind:
            self._log_sight(now)

    def _log_sight(self, now: float) -> None:
        period = self.sight.reports[-1]
        if self.sight.blind:
            log.warning(
                "blind: %d monitors late at once and %d pings on time for the same %d s;"
                " their misses make them unknown, no incident opens, until pings come back",
                period.late, period.heard, self.config.sight.window,
            )  # fmt: skip
        else:
            log.warning(
                "pings are back (since %.1f s ago): %d monitors were unknown at most; every"
                " monitor is judged afresh from then",
                now - (period.back_at or now), period.unknown_peak,
            )  # fmt: skip

    async def flush_once(self, *, all_seen: bool = False) -> bool:
        """Write what changed since the last flush, fenced by this process's leases;
        False (and nothing lost) on failure. What belongs to shards no longer held is
        dropped: their new owner judges them from what was persisted. `all_seen`: write
        the seen log's row now, due or not (shards given back, a stop)."""
        async with self._flush_lock:
            for _attempt in range(3):
                try:
                    return await self._flush_held(all_seen)
                except Fenced as exc:
                    self.fenced_flushes += 1
                    self._lose(exc.lost)
            return False

    async def _flush_held(self, all_seen: bool) -> bool:
        sight, table = self.sight, self.table
        self.pending_events.extend(sight.admit(table.take_events(), table))
        if all_seen:  # shards given back, a stop: what was held was no blindness
            self.pending_events.extend(sight.release(math.inf))
        held = self.leases.held if self.leases is not None else None
        rows, events = self.seen.take_dirty(table), self.pending_events
        if sight.held_count():
            # A monitor whose miss is held keeps its row back too: written with its
            # events, or never (blindness undid it). A crash meanwhile loses nothing that
            # a restart does not judge again.
            free, held_back = rows.only(lambda m: not sight.holds(m))
            if held_back:
                _mark_again(table, rows.only(sight.holds)[0])
                rows = free
        touched: list[int] = []
        seen_row: store.SeenRow | None = None
        seen_taken: Sequence[int] = []
        if self.seen.enabled:
            plan = self.seen.plan(
                table, held if held is not None else range(SHARDS), self.clock.now(),
                force=all_seen,
            )  # fmt: skip
            if plan is not None:
                # A large row is made in a thread: its sort and deflate (about 55 ms at
                # 95,000 entries, without the GIL) would hold every ping's answer meanwhile.
                made = (await trio.to_thread.run_sync(build_seen_row, plan)
                        if len(plan.ids) > SEEN_ROW_INLINE else build_seen_row(plan))  # fmt: skip
                seen_row = self.seen.built(plan, made)
                seen_taken = plan.ids if seen_row is not None else []
        if held is not None:
            # The shards written (one pass in the table), and only if one is no longer
            # held (rare: rows kept by a failed flush while a shard was lost), a filter.
            shards = set(table.shards(rows.seen_ids + rows.ids))
            shards.update(table.shards([e[0] for e in events]))
            shards.discard(-1)  # a deleted monitor's events: no shard to fence
            if not shards <= held.keys():
                gone = shards - held.keys()
                rows, left_out = rows.only(lambda m: table.shard(m) not in gone)
                kept = [e for e in events if table.shard(e[0]) not in gone]
                self.fenced_rows += left_out + len(events) - len(kept)
                events = kept
                shards -= gone
            if seen_row is not None:
                shards.update(seen_row.shards)  # all held: SeenWriter.row() saw to it
            touched = sorted(shards)
        dirty = store.Dirty(rows, events, seen_row)
        self.pending_events = []
        if not dirty:
            self.last_flush = self.clock.now()  # nothing to write: the database is current
            return True
        fence = None
        if self.leases is not None:
            leases = self.leases

            async def fence(conn: asyncpg.Connection) -> None:
                await leases.fence(conn, touched)

        started = time.perf_counter()
        try:
            with trio.CancelScope(shield=True):
                if self._flush_conn is None:
                    self._flush_conn = await self.db.connect("lastseen-ingest-flush")
                written, flushed = await self.db.call(
                    store.flush, self._flush_conn, dirty, self.db.timeout, fence
                )
        except Fenced:
            _mark_again(self.table, dirty.rows)
            self.pending_events[:0] = dirty.events
            if seen_row is not None:
                self.seen.failed(seen_row, table, seen_taken)
            raise
        except DB_ERRORS as exc:
            self.flush_failures += 1
            self.db_up = False
            _mark_again(self.table, dirty.rows)
            self.pending_events[:0] = dirty.events
            if seen_row is not None:
                self.seen.failed(seen_row, table, seen_taken)
            self.db.drop(self._flush_conn)
            self._flush_conn = None
            log.warning(
                "flush failed (%s): %d monitors and %d events kept for the next one",
                why(exc), len(dirty.all_ids), len(self.pending_events),
            )  # fmt: skip
            return False
        if sight.reports:
            await self._write_sight()
        self.flush_duration.observe(time.perf_counter() - started)
        self.flush_rows += written
        self.flush_events += flushed
        self.last_flush = self.clock.now()
        self.db_up = True
        if seen_row is not None:
            self.seen.written(seen_row, self.last_flush)
            if any(seen_row.fulls) and self.last_flush >= self._next_seen_prune:
                await self._prune_seen()
        return True

    async def _write_sight(self) -> None:
        """Record blind periods begun or ended (best effort: kept for the next flush)."""
        assert self._flush_conn is not None
        owner = self.leases.owner if self.leases is not None else "ingest"
        reports = self.sight.reports
        writing = list(reports)
        try:
            with trio.CancelScope(shield=True):
                await self.db.call(
                    store.write_blind_periods, self._flush_conn, owner, writing,
                    self.db.timeout,
                )  # fmt: skip
        except DB_ERRORS as exc:
            log.warning("recording a blind period failed (%s); tried again later", why(exc))
            return
        del reports[: len(writing)]

    async def _prune_seen(self) -> None:
        """Delete the seen log's rows that later full sections cover (best effort: the
        next full section tries again)."""
        self._next_seen_prune = self.clock.now() + SEEN_PRUNE_SECONDS
        try:
            with trio.CancelScope(shield=True):
                assert self._flush_conn is not None
                self.seen.pruned += await self.db.call(
                    store.prune_seen, self._flush_conn, self.db.timeout
                )
        except DB_ERRORS as exc:
            log.warning("pruning the seen log failed (%s); tried again later", why(exc))

    # -- shards

    async def _keep_leases(self) -> None:
        """Step the leases every quarter of a lease (or when another process gave some
        back), on a connection of its own, until cancelled."""
        with self._lease_scope:
            await self._keep_leases_on()

    async def _keep_leases_on(self) -> None:
        backoff = 0.5
        while True:
            conn = None
            try:
                conn = await self.db.connect("lastseen-ingest-leases")
                await self.db.call(conn.add_listener, "lastseen_shards", self._wake_step)
                while True:
                    await self._step_leases(conn)
                    backoff = 0.5
                    with trio.move_on_after(self.lease_ttl / 4):
                        await self._step_now.wait()
                    self._step_now = trio.Event()
            except DB_ERRORS as exc:
                self.lease_failures += 1
                log.warning("lease step failed (%s); shards kept until renewed", why(exc))
                await trio.sleep(backoff)
                backoff = min(backoff * 2, self.lease_ttl / 4)
            finally:
                self.db.drop(conn)

    def _wake_step(self, *_args: object) -> None:
        self._step_now.set()

    async def _step_leases(self, conn: asyncpg.Connection, *, initial: bool = False) -> None:
        leases, db = self.leases, self.db
        assert leases is not None
        await db.call(leases.here, conn)
        lost = await db.call(leases.renew, conn)
        if lost:
            self._lose(lost)
        share = await db.call(leases.fair_share, conn)
        excess = leases.excess(share)
        if excess and not initial:
            await self._give_back(conn, excess)
        await db.call(leases.acquire, conn, share)
        self.lease_steps += 1
        if initial:
            return
        if self.outbox is not None:
            self.outbox.owners = await db.call(Leases.owners, conn)
        unjudged = sorted(set(leases.held) - set(self.table.owned()))
        if unjudged:
            rows = await db.call(store.monitors_in_shards, conn, unjudged, db.timeout)
            self._take([s for s in unjudged if s in leases.held], rows)

    async def _give_back(self, conn: asyncpg.Connection, shards: list[int]) -> None:
        """A graceful move: stop judging `shards`, write what they have, then release
        them and wake the others (who take them at once)."""
        assert self.leases is not None
        self.table.release(shards)
        if not await self.flush_once(all_seen=True):
            self.table.take(shards, self.clock.now())  # not written: keep judging them
            return
        await self.db.call(self.leases.release, conn, shards)
        await self.db.call(conn.execute, "SELECT pg_notify('lastseen_shards', '')")
        log.info("gave back %d shard(s) for a fair share", len(shards))

    def _take(self, shards: list[int], rows: Iterable[store.MonitorRow]) -> None:
        """Judge `shards` from now on, from their persisted rows, the takeover as floor."""
        if not shards:
            return
        now = self.clock.now()
        taking = set(shards)
        self._drop_unflushed(taking)  # left from an earlier ownership: stale
        table = self.table
        rows = list(rows)
        # What this process loaded of them long ago is stale: judged from the rows, not
        # from that; but a ping it answered meanwhile (handed to the old owner, perhaps
        # never written) is recorded after, like a ping. All in one step: no ping can
        # fall between the removal and the load.
        heard: dict[int, float] = {}
        for r in rows:
            known = table.get(r.id)
            if known is not None and known["last_seen"] > r.last_seen:
                heard[r.id] = known["last_seen"]
            table.remove(r.id)
        table.take(shards, now)
        for r in rows:
            table.upsert(r.id, r.digest, r.interval, r.grace, r.threshold, r.paused, now,
                         r.state, r.misses, r.last_seen, r.incident_open, r.recovery,
                         r.max_runtime, r.started, r.expected())  # fmt: skip
        for monitor_id, at in heard.items():
            table.seen(monitor_id, at)
        self.shards_taken += len(shards)
        self._changed()
        log.info("took %d shard(s)", len(shards))

    def _lose(self, lost: list[int]) -> None:
        """Shards whose leases another process holds now: stop judging them, and drop
        what they have not written (fenced: their new owner judges from the database)."""
        assert self.leases is not None
        for shard in lost:
            self.leases.held.pop(shard, None)
        self.table.release(lost)
        self._drop_unflushed(set(lost))
        self.shards_lost += len(lost)
        self.ever_lost = True
        log.warning("lost %d shard(s) to another process", len(lost))

    def _drop_unflushed(self, shards: set[int]) -> None:
        table = self.table
        rows, left_out = table.take_dirty().only(lambda m: table.shard(m) not in shards)
        _mark_again(table, rows)
        events = self.pending_events + self.sight.admit(table.take_events(), table)
        self.pending_events = [e for e in events if table.shard(e[0]) not in shards]
        self.sight.drop(lambda m: table.shard(m) in shards)
        self.fenced_rows += left_out + len(events) - len(self.pending_events)

    def _receive_handoff(self, body: bytes) -> bool:
        """A peer's hand-off; refused (the peer keeps it and retries) until the table
        is loaded, or a ping of a monitor not loaded yet would be dropped."""
        if self.outbox is None or self.loaded_at is None:
            return False
        return self.outbox.receive(body)

    def _paused(self, now: float, late: float) -> None:
        self.pauses += 1
        touched = self.table.amnesty(now)
        log.warning(
            "woke %.1f s late (paused or stalled): pings may have gone unheard; %d monitors"
            " judged afresh from now", late, touched,
        )  # fmt: skip

    def _slack(self) -> float:
        return SLACK if self.outbox is not None and self.outbox.has_peers else 0.0

    def _owner_name(self) -> str:
        """This process's name in the leases: its admin address, as others reach it."""
        host = self.config.admin_host
        if host in ("", "0.0.0.0", "::"):
            host = socket.getfqdn()
        return f"[{host}]:{self.admin_port}" if ":" in host else f"{host}:{self.admin_port}"

    async def _hand_over(self) -> None:
        """A graceful stop, once nothing is answered any more: judge nothing more (pings
        handed to this process from now on are relayed), write everything, hand every
        shard back (the others take them at once), then relay what is still waiting to
        the new owners."""
        if self.leases is None or self.outbox is None:
            return
        self._lease_scope.cancel()  # no step may take shards back meanwhile
        held = sorted(self.leases.held)
        self.table.release(held)
        if not await self.flush_once(all_seen=True):
            return  # the leases expire instead, and the others load what was written
        conn = None
        try:
            conn = await self.db.connect("lastseen-ingest-leave")
            await self.db.call(self.leases.leave, conn)
            await self.db.call(conn.execute, "SELECT pg_notify('lastseen_shards', '')")
            log.info("handed %d shard(s) over", len(held))
            outbox = self.outbox
            with trio.move_on_after(HAND_OVER_SECONDS):
                while True:
                    await trio.sleep(0.1)
                    outbox.owners = await self.db.call(Leases.owners, conn)
                    if outbox.idle():
                        break
            if not outbox.idle():
                log.warning("%d hand-off(s) could not be relayed", len(outbox.waiting))
        except DB_ERRORS as exc:
            log.warning("could not hand the shards back (%s): they expire instead", why(exc))
        finally:
            self.db.drop(conn)

    async def _flush_forever(self) -> None:
        while True:
            await trio.sleep(self.config.flush_interval)
            await self.flush_once()

    def _responder(self) -> ResponseCache:
        self.fast.record_plain = self.config.ping_history_plain
        return ResponseCache(self.fast, self.history, self.config.limits.max_body_bytes)

    async def _write_history_forever(self) -> None:
        conn: asyncpg.Connection | None = None
        try:
            while True:
                await trio.sleep(HISTORY_SECONDS)
                conn = await self.write_history(conn)
        finally:
            self.db.drop(conn)

    async def write_history(self, conn: asyncpg.Connection | None) -> asyncpg.Connection | None:
        """Write the check-ins waiting (any process writes those it answered: they are
        facts about pings, not state, so no lease fences them); returns the connection to
        use next time (None after a failure: the rows wait for the next try)."""
        history = self.history
        taken = history.take()
        rows, logs = taken
        written = copied = 0
        prune: list[int] = []
        try:
            if taken and conn is None:
                conn = await self.db.connect("lastseen-ingest-history")
            for fast in logs:  # the fast path's: one binary COPY each
                history.written += await self.db.call(
                    checkins.copy, conn, fast, self.table, self.db.timeout
                )
                fast.count_into(history.touched)
                copied += 1
            for start in range(0, len(rows), HISTORY_BATCH):
                part = rows[start : start + HISTORY_BATCH]
                history.written += await self.db.call(checkins.write, conn, part, self.db.timeout)
                history.wrote(part)
                written += len(part)
            now = self.clock.now()
            if history.touched and now >= self._history_prune_at and conn is not None:
                prune = history.due()
                history.pruned += await self.db.call(
                    checkins.prune, conn, prune, history.keep, self.db.timeout
                )
                self._history_prune_at = now + checkins.PRUNE_SECONDS
            return conn
        except DB_ERRORS as exc:
            left = checkins.Taken(rows[written:], logs[copied:])
            log.warning("ping history not written (%s); %d rows wait", why(exc), len(left))
            history.give_back(left)
            history.failures += 1
            for monitor_id in prune:  # pruned next time
                history.touched[monitor_id] = history.slack
            self.db.drop(conn)
            return None

    # -- the process

    async def run(
        self,
        *,
        handle_signals: bool = False,
        own_process: bool = False,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until request_stop() (or SIGTERM/SIGINT with handle_signals).
        `own_process` (the `lastseen ingest` process, not a test's ingest in the runner's
        own process): once loaded and listening, everything made so far is frozen out of
        the collector's way (``gc.freeze``): every full collection walked those 55,000
        objects, 13 ms a time, which under a new connection per ping was most of the p99.
        And the loop yields its core between batches (``listener.YieldBetweenBatches``)."""
        if self._clock is None:
            self._clock = Clock()
        self.started_at = self.clock.now()
        raise_fd_limit(self.config.limits.max_connections + 1024)
        async with trio_asyncio.open_loop() as loop, trio.open_nursery() as outer:
            self.db.loop = loop
            # trio-asyncio's default handler re-raises stray asyncio errors into trio and so
            # ends the process; a dropped database connection must not.
            loop.set_exception_handler(_log_asyncio_error)
            if handle_signals:
                outer.start_soon(self._stop_on_signal)
            # The admin listener first: its address names this process in the leases.
            self.admin_port = await outer.start(
                serve_admin, self.config.admin_host, self.config.admin_port,
                self.render_metrics, self.health, self._receive_handoff,
            )  # fmt: skip
            self.leases = Leases(self._owner_name(), ttl=self.lease_ttl)
            await self._initial_load()
            trusted = self.config.trusted_proxies
            upstream = Upstream(*self.config.upstream, trusted) if self.config.upstream else None
            self.listener = Listener(
                self.responder, self.config.limits, self.clock, upstream, trusted=trusted
            )
            sock = open_listen_socket(
                self.config.host, self.config.port, reuse_port=self.config.reuse_port
            )
            self.port = sock.getsockname()[1]
            async with trio.open_nursery() as workers:
                self.deadlines = Deadlines(
                    lambda: self.table, self.clock, self._on_events, self._slack, self._paused
                )
                workers.start_soon(self.deadlines.run)
                workers.start_soon(self._flush_forever)
                workers.start_soon(self._write_history_forever)
                assert self.feed is not None and self.outbox is not None
                workers.start_soon(self._keep_leases)
                workers.start_soon(self.outbox.run)
                async with trio.open_nursery() as serving:
                    await serving.start(self.listener.serve, sock)
                    # Listening: the feed's first read says what this process has applied
                    # (the control plane waits for it before answering a change).
                    workers.start_soon(self.feed.run)
                    if own_process:
                        gc.collect()
                        gc.freeze()
                        trio.lowlevel.add_instrument(self.yielder)
                    log.info("ingest listening on %s:%d", self.config.host, self.port)
                    task_status.started(self.port)
                    await self._stop.wait()
                    log.info("stopping: finishing requests in progress")
                    await self.listener.stop(self.config.shutdown_grace)
                with trio.move_on_after(self.config.db_timeout + HAND_OVER_SECONDS):
                    await self._hand_over()
                workers.cancel_scope.cancel()
            with trio.move_on_after(self.config.db_timeout):
                await self.flush_once(all_seen=True)
            with trio.move_on_after(self.config.db_timeout):
                self.db.drop(await self.write_history(None))
            self.db.drop(self._flush_conn)
            outer.cancel_scope.cancel()
        log.info("ingest stopped")

    async def _stop_on_signal(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                self.request_stop()
                return

    # -- observability

    def health(self) -> tuple[bool, dict[str, object]]:
        """Serving (200) once the listener is up: pings are answered from memory even
        while the database is down, so a load balancer must keep sending them here; the
        body says what is down ("degraded")."""
        lag = self.flush_lag()
        down = [] if self.db_up else ["database"]
        held = sorted(self.leases.held) if self.leases is not None else []
        # Owning nothing after losing leases (paused, partitioned): a load balancer should
        # prefer another process; its pings are still answered right if it does not.
        if not held and self.ever_lost:
            down.append("shards")
        serving = self.listener is not None and "shards" not in down
        return serving, {
            "status": "starting" if self.listener is None else "degraded" if down else "ok",
            "down": down,
            "owner": self.leases.owner if self.leases is not None else None,
            "pid": os.getpid(),  # which of a host's processes this is (several: one port)
            "shards": len(held),
            "shard_ranges": _ranges(held),
            "monitors": len(self.table),
            "database": "up" if self.db_up else "down",
            "flush_lag_seconds": None if math.isinf(lag) else round(lag, 3),
        }

    def flush_lag(self) -> float:
        """Seconds the database may lag memory: since the last flush that left nothing
        behind (since the load if none yet)."""
        since = self.last_flush or self.loaded_at
        return math.inf if since is None else self.clock.now() - since

    def render_metrics(self) -> str:
        p = "lastseen_"
        fast = self.fast
        statuses = Counter(self.responder.status_counts)
        statuses[204] += fast.answered_204
        statuses[404] += fast.answered_404
        samples: list[tuple[Metric, list[str]]] = [
            (
                Metric(p + "pings_total", "counter", "Pings by result."),
                [
                    sample(p + "pings_total", fast.pings_ok, result="ok"),
                    sample(p + "pings_total", fast.pings_unknown, result="unknown"),
                    sample(p + "pings_total", fast.pings_malformed, result="malformed"),
                ],
            ),
            (
                Metric(
                    p + "checkins_total",
                    "counter",
                    "Check-ins (signals, pings with a body) by kind, and unknown tokens.",
                ),
                [
                    *(
                        sample(p + "checkins_total", n, kind=kind)
                        for kind, n in self.responder.checkins.answered.items()
                    ),
                    sample(p + "checkins_total", self.responder.checkins.unknown, kind="unknown"),
                ],
            ),
            (
                Metric(p + "http_responses_total", "counter", "Responses by status."),
                [
                    sample(p + "http_responses_total", n, status=str(code))
                    for code, n in sorted(statuses.items())
                ],
            ),
            (
                Metric(p + "flush_duration_seconds", "histogram", "Flush duration."),
                list(self.flush_duration.lines(p + "flush_duration_seconds")),
            ),
            (
                Metric(
                    p + "detection_lag_seconds",
                    "histogram",
                    "From a deadline to its event going to the database (the blindness window "
                    "included when misses are held).",
                ),
                list(self.detection_lag.lines(p + "detection_lag_seconds")),
            ),
        ]
        samples += [
            (Metric(p + spec.name, spec.kind, spec.help), [sample(p + spec.name, spec.read(self))])
            for spec in SIMPLE_METRICS
        ]
        return render(samples)


def _mark_again(table: DeadlineTable, rows: DirtyRows) -> None:
    """Give rows that were taken but not written back to the table for the next flush, as
    they were taken: a monitor only pinged stays a last-seen row, not a whole one."""
    table.mark_dirty(rows.ids)
    table.mark_dirty(rows.seen_ids, changed=False)


def _ranges(shards: list[int]) -> list[str]:
    """Sorted shards as ranges: [0, 1, 2, 7] -> ["0-2", "7"]."""
    out: list[str] = []
    start = prev = None
    for shard in [*shards, None]:
        if shard is not None and prev is not None and shard == prev + 1:
            prev = shard
            continue
        if start is not None:
            out.append(f"{start}-{prev}" if prev != start else f"{start}")
        start = prev = shard
    return out


@dataclass(frozen=True)
class Spec:
    """One single-valued metric of the ingest: its name (after lastseen_), its kind, its
    help text, and how to read it."""

    name: str
    kind: str
    help: str
    read: Callable[[Ingest], float]


def _listener(attribute: str) -> Callable[[Ingest], float]:
    def read(ingest: Ingest) -> float:
        lst = ingest.listener
        return float(getattr(lst.statistics(), attribute)) if lst is not None else 0.0

    return read


def _outbox(attribute: str) -> Callable[[Ingest], float]:
    def read(ingest: Ingest) -> float:
        box = ingest.outbox
        return float(getattr(box.counts, attribute)) if box is not None else 0.0

    return read


def _flush_lag(ingest: Ingest) -> float:
    lag = ingest.flush_lag()
    return -1.0 if math.isinf(lag) else lag


SIMPLE_METRICS = (
    Spec("open_connections", "gauge", "Open client connections.",
         _listener("open_connections")),
    Spec("listener_deadline_entries", "gauge",
         "Entries in the listener's deadline heap: open connections and ended ones not yet"
         " dropped.", _listener("deadline_entries")),
    Spec("gc_frozen_objects", "gauge",
         "Objects made before serving, kept out of garbage collection (gc.freeze).",
         lambda i: gc.get_freeze_count()),
    Spec("loop_yields_total", "counter",
         "Times the ingest process gave up its core between batches (sched_yield).",
         lambda i: i.yielder.yields),
    Spec("connections_accepted_total", "counter", "Connections accepted.",
         _listener("accepted")),
    Spec("connections_rejected_total", "counter",
         "Connections closed at once (cap reached, none evictable).", _listener("rejected")),
    Spec("connections_evicted_total", "counter",
         "Idle or slow connections closed to make room for new ones (cap).",
         _listener("evicted")),
    Spec("connections_over_address_limit_total", "counter",
         "Connections answered 503: their address had its share of the cap.",
         _listener("over_address_limit")),
    Spec("connection_timeouts_total", "counter", "Connections closed by a deadline.",
         _listener("timeouts")),
    Spec("monitors", "gauge", "Monitors loaded.",
         lambda i: i.table.statistics()["monitors"]),
    Spec("monitors_scheduled", "gauge", "Monitors with a deadline.",
         lambda i: i.table.statistics()["scheduled"]),
    Spec("dirty_monitors", "gauge",
         "Monitors marked for writing: changed since the last flush, and (with the seen"
         " log) pinged since its last row.",
         lambda i: i.table.statistics()["dirty"]),
    Spec("pending_events", "gauge", "Events not yet flushed.", lambda i: len(i.pending_events)),
    Spec("flush_rows_total", "counter", "Monitor rows flushed.", lambda i: i.flush_rows),
    Spec("flush_events_total", "counter", "Events flushed.", lambda i: i.flush_events),
    Spec("flush_failures_total", "counter", "Failed flushes (state kept).",
         lambda i: i.flush_failures),
    Spec("seen_log_rows_total", "counter", "Rows written to the seen log.",
         lambda i: i.seen.rows),
    Spec("seen_log_entries_total", "counter", "Last-seen times written to the seen log.",
         lambda i: i.seen.entries),
    Spec("seen_log_waiting", "gauge",
         "Monitors pinged since the seen log's last row, as of the last flush (their"
         " times wait in the table for the next row).",
         lambda i: i.seen.waiting),
    Spec("seen_log_pruned_total", "counter", "Seen log rows deleted (superseded).",
         lambda i: i.seen.pruned),
    Spec("ping_history_written_total", "counter", "Rows written to the ping history.",
         lambda i: i.history.written),
    Spec("ping_history_pruned_total", "counter",
         "Ping history rows deleted: past LASTSEEN_PING_HISTORY per monitor.",
         lambda i: i.history.pruned),
    Spec("ping_history_failures_total", "counter",
         "Ping history writes that failed (their check-ins wait for the next).",
         lambda i: i.history.failures),
    Spec("ping_history_waiting", "gauge", "Check-ins waiting to be written.",
         lambda i: len(i.history)),
    Spec("ping_history_dropped_total", "counter",
         "Check-ins not kept in the history: too many waited while the database was away.",
         lambda i: i.history.dropped),
    Spec("flush_lag_seconds", "gauge", "Seconds since the last successful flush.", _flush_lag),
    Spec("database_up", "gauge", "1 if the last database call succeeded.",
         lambda i: int(i.db_up)),
    Spec("shards_owned", "gauge", "Shards this process holds leases on and judges.",
         lambda i: len(i.leases.held) if i.leases is not None else 0),
    Spec("lease_steps_total", "counter", "Lease steps done (renew, rebalance, take).",
         lambda i: i.lease_steps),
    Spec("lease_failures_total", "counter", "Lease steps failed (database).",
         lambda i: i.lease_failures),
    Spec("shards_taken_total", "counter", "Shards taken over.", lambda i: i.shards_taken),
    Spec("shards_lost_total", "counter", "Shards lost to another process.",
         lambda i: i.shards_lost),
    Spec("pauses_total", "counter",
         "Times the process woke too late (frozen): every monitor judged afresh.",
         lambda i: i.pauses),
    Spec("fenced_flushes_total", "counter",
         "Flushes refused by the fence (shards no longer held): nothing of them written.",
         lambda i: i.fenced_flushes),
    Spec("fenced_rows_total", "counter",
         "Rows and events dropped because their shard was no longer held.",
         lambda i: i.fenced_rows),
    Spec("handoffs_sent_total", "counter", "Pings handed to their owner.",
         _outbox("sent")),
    Spec("handoffs_received_total", "counter", "Pings handed to this owner.",
         _outbox("received")),
    Spec("handoffs_relayed_total", "counter", "Hand-offs received for shards owned "
         "elsewhere now, handed on.", _outbox("relayed")),
    Spec("handoffs_dropped_total", "counter", "Hand-offs dropped: no owner within 30 s.",
         _outbox("dropped")),
    Spec("handoffs_refused_total", "counter", "Hand-off bodies that failed "
         "authentication.", _outbox("refused")),
    Spec("handoff_send_failures_total", "counter", "Failed hand-off sends (kept, retried).",
         _outbox("send_failures")),
    Spec("blind", "gauge", "1 while this process is blind: pings stopped for (nearly) all "
         "at once; misses make monitors unknown, no incident opens.",
         lambda i: int(i.sight.blind)),
    Spec("blind_periods_total", "counter", "Times this process went blind.",
         lambda i: i.sight.periods),
    Spec("unknown_monitors", "gauge", "Monitors unknown (missed while blind).",
         lambda i: i.table.unknown_count() if i.sight.blind else 0),
    Spec("misses_held", "gauge", "Events held for the blindness window (misses, and "
         "what follows them per monitor).", lambda i: i.sight.held_count()),
    Spec("misses_undone_total", "counter", "Missed-deadline events dropped as blindness.",
         lambda i: i.sight.dropped),
    Spec("sight_late", "gauge", "Monitors late in the last blindness window (last round).",
         lambda i: i.sight.last_late),
    Spec("sight_heard", "gauge", "On-time pings for the same window's deadlines.",
         lambda i: i.sight.last_heard),
)  # fmt: skip


def _log_asyncio_error(_loop: object, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    log.warning(
        "asyncio: %s (%s)", context.get("message", "error"), why(exc) if exc else "no exception"
    )
