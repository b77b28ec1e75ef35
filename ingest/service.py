"""The ingest process: load, serve, keep deadlines, flush, follow changes, stop gracefully.

How this works
--------------
Pings never wait for PostgreSQL: they touch only the in-memory table. Four tasks run beside
the listener:

- the scheduler sleeps until the table's next deadline (at most a second; woken early when
  a configuration change may have moved one) and processes what is due;
- the flusher writes the dirty monitors and the events every ``flush_interval``; a failed
  flush keeps them (the table re-marks the rows, the events stay queued), so unflushed
  state is bounded by the number of monitors, not of pings;
- the change feed (``changefeed.py``) follows configuration changes into the table;
- the admin listener serves /metrics (``SIMPLE_METRICS``: one spec per single-valued
  metric) and /healthz.

Its configuration is ``config.py``; every database call goes through ``database.py``, with
a timeout, and a flush runs shielded from shutdown, so a hung server blocks nothing
longer than that and a flush is never cut in half by a stop.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import trio
import trio_asyncio

from core import DeadlineTable

from . import store
from ._fastpath import FastPath
from .changefeed import ChangeFeed
from .clock import Clock
from .config import IngestConfig, raise_fd_limit
from .database import DB_ERRORS, Database, why
from .forward import Upstream
from .listener import Listener, open_listen_socket
from .metrics import FLUSH_BUCKETS, LAG_BUCKETS, Histogram, Metric, render, sample, serve_admin
from .protocol import ResponseCache
from .scheduler import Deadlines

log = logging.getLogger(__name__)


class Ingest:
    """One ingest process. run() it inside trio; request_stop() ends it gracefully."""

    def __init__(self, config: IngestConfig, clock: Clock | None = None) -> None:
        self.config = config
        self._clock = clock
        self.db = Database(config.database_url, config.db_timeout)
        # Empty until the initial load sizes the table for the monitors there are.
        self.table = DeadlineTable()
        self.fast = FastPath(self.table, config.limits.max_head_bytes)
        self.responder = ResponseCache(self.fast)
        self.feed: ChangeFeed | None = None
        self.listener: Listener | None = None
        self.pending_events: list[tuple[int, str, float]] = []
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
                total = await db.call(store.count, conn, db.timeout)
                self.table = DeadlineTable(capacity=max(1024, int(total * 1.02) + 1024))
                self.fast = FastPath(self.table, self.config.limits.max_head_bytes)
                self.responder = ResponseCache(self.fast)
                started = time.perf_counter()
                self.feed = ChangeFeed(db, self.table, self.clock, self._changed, self._db_state,
                                       self.config.poll_interval)  # fmt: skip
                await self.feed.load(conn)
                self.loaded_at = self.clock.now()
                self.db_up = True
                log.info(
                    "loaded %d monitors in %.2f s", len(self.table), time.perf_counter() - started
                )
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

    def _on_events(self, events: list[tuple[int, str, float]], now: float) -> None:
        for _id, kind, at in events:
            if kind == "down" or kind == "incident_opened":
                self.detection_lag.observe(max(0.0, now - at))
        self.pending_events.extend(events)

    async def flush_once(self) -> bool:
        """Write what changed since the last flush; False (and nothing lost) on failure."""
        async with self._flush_lock:
            self.pending_events.extend(self.table.take_events())
            dirty = store.Dirty(self.table.take_dirty(), self.pending_events)
            self.pending_events = []
            if not dirty:
                self.last_flush = self.clock.now()  # nothing to write: the database is current
                return True
            started = time.perf_counter()
            try:
                with trio.CancelScope(shield=True):
                    if self._flush_conn is None:
                        self._flush_conn = await self.db.connect("lastseen-ingest-flush")
                    rows, events = await self.db.call(
                        store.flush, self._flush_conn, dirty, self.db.timeout
                    )
            except DB_ERRORS as exc:
                self.flush_failures += 1
                self.db_up = False
                self.table.mark_dirty(dirty.all_ids)
                self.pending_events[:0] = dirty.events
                self.db.drop(self._flush_conn)
                self._flush_conn = None
                log.warning(
                    "flush failed (%s): %d monitors and %d events kept for the next one",
                    why(exc), len(dirty.all_ids), len(self.pending_events),
                )  # fmt: skip
                return False
            self.flush_duration.observe(time.perf_counter() - started)
            self.flush_rows += rows
            self.flush_events += events
            self.last_flush = self.clock.now()
            self.db_up = True
            return True

    async def _flush_forever(self) -> None:
        while True:
            await trio.sleep(self.config.flush_interval)
            await self.flush_once()

    # -- the process

    async def run(
        self,
        *,
        handle_signals: bool = False,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until request_stop() (or SIGTERM/SIGINT with handle_signals)."""
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
            await self._initial_load()
            trusted = self.config.trusted_proxies
            upstream = Upstream(*self.config.upstream, trusted) if self.config.upstream else None
            self.listener = Listener(
                self.responder, self.config.limits, self.clock, upstream, trusted=trusted
            )
            sock = open_listen_socket(self.config.host, self.config.port)
            self.port = sock.getsockname()[1]
            async with trio.open_nursery() as workers:
                self.admin_port = await workers.start(
                    serve_admin, self.config.admin_host, self.config.admin_port,
                    self.render_metrics, self.health,
                )  # fmt: skip
                self.deadlines = Deadlines(lambda: self.table, self.clock, self._on_events)
                workers.start_soon(self.deadlines.run)
                workers.start_soon(self._flush_forever)
                assert self.feed is not None
                workers.start_soon(self.feed.run)
                async with trio.open_nursery() as serving:
                    await serving.start(self.listener.serve, sock)
                    log.info("ingest listening on %s:%d", self.config.host, self.port)
                    task_status.started(self.port)
                    await self._stop.wait()
                    log.info("stopping: finishing requests in progress")
                    await self.listener.stop(self.config.shutdown_grace)
                workers.cancel_scope.cancel()
            with trio.move_on_after(self.config.db_timeout):
                await self.flush_once()
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
        serving = self.listener is not None
        return serving, {
            "status": "starting" if not serving else "degraded" if down else "ok",
            "down": down,
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
                Metric(p + "detection_lag_seconds", "histogram", "From a deadline to its event."),
                list(self.detection_lag.lines(p + "detection_lag_seconds")),
            ),
        ]
        samples += [
            (Metric(p + spec.name, spec.kind, spec.help), [sample(p + spec.name, spec.read(self))])
            for spec in SIMPLE_METRICS
        ]
        return render(samples)


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


def _flush_lag(ingest: Ingest) -> float:
    lag = ingest.flush_lag()
    return -1.0 if math.isinf(lag) else lag


SIMPLE_METRICS = (
    Spec("open_connections", "gauge", "Open client connections.",
         _listener("open_connections")),
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
    Spec("dirty_monitors", "gauge", "Monitors changed since the last flush.",
         lambda i: i.table.statistics()["dirty"]),
    Spec("pending_events", "gauge", "Events not yet flushed.", lambda i: len(i.pending_events)),
    Spec("flush_rows_total", "counter", "Monitor rows flushed.", lambda i: i.flush_rows),
    Spec("flush_events_total", "counter", "Events flushed.", lambda i: i.flush_events),
    Spec("flush_failures_total", "counter", "Failed flushes (state kept).",
         lambda i: i.flush_failures),
    Spec("flush_lag_seconds", "gauge", "Seconds since the last successful flush.", _flush_lag),
    Spec("database_up", "gauge", "1 if the last database call succeeded.",
         lambda i: int(i.db_up)),
)  # fmt: skip


def _log_asyncio_error(_loop: object, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    log.warning(
        "asyncio: %s (%s)", context.get("message", "error"), why(exc) if exc else "no exception"
    )
