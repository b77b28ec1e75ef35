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
- the follower LISTENs for configuration changes and applies each at once, polls every
  ``poll_interval`` in case a NOTIFY was missed, and resyncs in full after a reconnect;
- the admin listener serves /metrics and /healthz.

Every database call has a timeout and runs shielded from shutdown, so a hung server
blocks nothing longer than that and a flush is never cut in half by a stop.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg
import trio
import trio_asyncio

from core import DeadlineTable
from core.proxies import TrustedProxies

from . import store
from ._fastpath import FastPath
from .clock import Clock
from .forward import Upstream
from .listener import Listener, open_listen_socket
from .metrics import FLUSH_BUCKETS, LAG_BUCKETS, Histogram, Metric, render, sample, serve_admin
from .protocol import SECONDS, Limits, Responder
from .scheduler import Deadlines

log = logging.getLogger(__name__)

DB_ERRORS = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    # A call abandoned at its timeout can leave the connection mid-operation; the next call
    # on it says so with this (seen with PostgreSQL stopped under the follower). The
    # connection is dropped and a new one made, like after any other failure.
    asyncpg.InternalClientError,
    TimeoutError,
    trio.TooSlowError,
)
LOAD_LIMIT = 120 * SECONDS  # a full load; each batch within it still has db_timeout
PRUNE_INTERVAL = 3600 * SECONDS  # how often the deletion log is trimmed


def parse_address(value: str, default_port: int) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host:
        return value, default_port
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class IngestConfig:
    """Everything the ingest process can be told; units are in the names."""

    database_url: str
    host: str = "127.0.0.1"
    port: int = 8080
    admin_host: str = "127.0.0.1"
    admin_port: int = 9108
    flush_interval: float = 1 * SECONDS
    poll_interval: float = 5 * SECONDS
    db_timeout: float = 5 * SECONDS
    shutdown_grace: float = 2 * SECONDS
    limits: Limits = field(default_factory=Limits)
    # The control process, for everything that is not a heartbeat (None: 404 instead).
    upstream: tuple[str, int] | None = None
    # LASTSEEN_TRUSTED_PROXIES: whose X-Forwarded-* to believe, who may hold many connections.
    trusted_proxies: TrustedProxies = field(default_factory=TrustedProxies.from_env)

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> IngestConfig:
        """Read LASTSEEN_* variables; `overrides` (e.g. from the command line) win."""
        values: dict[str, Any] = {}
        if "LASTSEEN_DATABASE_URL" in env:
            values["database_url"] = env["LASTSEEN_DATABASE_URL"]
        if "LASTSEEN_INGEST_LISTEN" in env:
            values["host"], values["port"] = parse_address(env["LASTSEEN_INGEST_LISTEN"], 8080)
        values["trusted_proxies"] = TrustedProxies.from_env(env)
        if env.get("LASTSEEN_CONTROL_UPSTREAM"):
            values["upstream"] = parse_address(env["LASTSEEN_CONTROL_UPSTREAM"], 8081)
        if "LASTSEEN_ADMIN_LISTEN" in env:
            values["admin_host"], values["admin_port"] = parse_address(
                env["LASTSEEN_ADMIN_LISTEN"], 9108
            )
        for name, var in [
            ("flush_interval", "LASTSEEN_FLUSH_INTERVAL_SECONDS"),
            ("poll_interval", "LASTSEEN_POLL_INTERVAL_SECONDS"),
            ("db_timeout", "LASTSEEN_DB_TIMEOUT_SECONDS"),
        ]:
            if var in env:
                values[name] = float(env[var])
        limit_values: dict[str, Any] = {}
        for name, var in [
            ("max_connections", "LASTSEEN_MAX_CONNECTIONS"),
            ("max_connections_per_address", "LASTSEEN_MAX_CONNECTIONS_PER_ADDRESS"),
            ("max_requests_per_connection", "LASTSEEN_MAX_REQUESTS_PER_CONNECTION"),
            ("max_head_bytes", "LASTSEEN_MAX_HEAD_BYTES"),
            ("max_body_bytes", "LASTSEEN_MAX_BODY_BYTES"),
        ]:
            if var in env:
                limit_values[name] = int(env[var])
        for name, var in [
            ("head_timeout", "LASTSEEN_HEAD_TIMEOUT_SECONDS"),
            ("body_timeout", "LASTSEEN_BODY_TIMEOUT_SECONDS"),
            ("keepalive_timeout", "LASTSEEN_KEEPALIVE_TIMEOUT_SECONDS"),
        ]:
            if var in env:
                limit_values[name] = float(env[var])
        values["limits"] = replace(Limits(), **limit_values)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "database_url" not in values:
            raise ValueError("no database: set LASTSEEN_DATABASE_URL")
        return cls(**values)


def raise_fd_limit(wanted: int) -> None:
    """Raise RLIMIT_NOFILE towards `wanted` so the connection cap, not EMFILE, decides."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class Ingest:
    """One ingest process. run() it inside trio; request_stop() ends it gracefully."""

    def __init__(self, config: IngestConfig, clock: Clock | None = None) -> None:
        self.config = config
        self._clock = clock
        self.table = DeadlineTable()
        self.fast = FastPath(self.table, config.limits.max_head_bytes)
        self.responder = Responder(self.fast)
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
        self._xmin = ""
        self._flush_conn: asyncpg.Connection | None = None
        self._loop: Any = None  # the trio-asyncio loop: database calls may come from any task
        self._flush_lock = trio.Lock()
        self._stop = trio.Event()
        self.deadlines: Deadlines | None = None

    @property
    def clock(self) -> Clock:
        assert self._clock is not None, "run() first"
        return self._clock

    def request_stop(self) -> None:
        self._stop.set()

    # -- database plumbing

    async def _db(self, fn: Any, *args: Any, limit: float | None = None) -> Any:
        """Run an asyncio database call from trio, bounded by `limit` or the db timeout."""
        with trio.fail_after(limit or self.config.db_timeout + 1):
            return await trio_asyncio.aio_as_trio(fn, loop=self._loop)(*args)

    async def _connect(self, application: str) -> asyncpg.Connection:
        return await self._db(
            store.connect, self.config.database_url, self.config.db_timeout, application
        )

    async def _drop(self, conn: asyncpg.Connection | None) -> None:
        if conn is not None:
            conn.terminate()

    # -- load and follow

    def _apply(self, rows: Sequence[store.MonitorRow]) -> None:
        now = self.clock.now()
        upsert = self.table.upsert
        for r in rows:
            try:
                upsert(r[0], r[1], r[2], r[3], r[4], r[5], now, r[6], r[7], r[8], r[9])
            except ValueError as exc:
                log.error("monitor %s not loaded: %s", r[0], exc)

    async def _load(self, conn: asyncpg.Connection) -> None:
        self._xmin, _rows, refused = await self._db(
            store.load, conn, self.table, self.clock.now(), self.config.db_timeout, limit=LOAD_LIMIT
        )
        for monitor_id, why in refused:
            log.error("monitor %s not loaded: %s", monitor_id, why)

    async def _initial_load(self) -> None:
        backoff = 0.5
        while True:
            conn = None
            try:
                conn = await self._connect("lastseen-ingest-load")
                total = await self._db(store.count, conn, self.config.db_timeout)
                self.table = DeadlineTable(capacity=max(1024, int(total * 1.02) + 1024))
                self.fast = FastPath(self.table, self.config.limits.max_head_bytes)
                self.responder = Responder(self.fast)
                started = time.perf_counter()
                await self._load(conn)
                self.loaded_at = self.clock.now()
                self.db_up = True
                log.info(
                    "loaded %d monitors in %.2f s", len(self.table), time.perf_counter() - started
                )
                return
            except DB_ERRORS as exc:
                log.warning("database not reachable yet (%s); retrying", _why(exc))
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                await self._drop(conn)

    async def _follow(self) -> None:
        resync = False
        backoff = 0.5
        while True:
            conn = None
            try:
                conn = await self._connect("lastseen-ingest-follow")
                await self._follow_on(conn, resync=resync)
            except DB_ERRORS as exc:
                self.db_up = False
                log.warning("change feed lost (%s); reconnecting", _why(exc))
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            else:
                backoff = 0.5
            finally:
                await self._drop(conn)
            resync = True

    async def _follow_on(self, conn: asyncpg.Connection, *, resync: bool) -> None:
        """LISTEN on one connection and apply changes until it fails."""
        notified: set[int] = set()
        wakes = [trio.Event()]

        def on_notify(_c: object, _pid: int, _channel: str, payload: str) -> None:
            if payload.isdigit():
                notified.add(int(payload))
            wakes[0].set()

        await self._db(conn.add_listener, "lastseen_monitors", on_notify)
        if resync:
            # NOTIFYs sent while we were away are gone: compare everything once.
            await self._resync(conn)
        next_poll = next_prune = trio.current_time()
        while True:
            if trio.current_time() >= next_prune:
                # The deletion log only bridges missed NOTIFYs; a day of it is plenty.
                await self._db(store.prune_deletions, conn, self.config.db_timeout)
                next_prune = trio.current_time() + PRUNE_INTERVAL
            if trio.current_time() >= next_poll:
                await self._poll(conn)
                next_poll = trio.current_time() + self.config.poll_interval
            with trio.move_on_at(next_poll):
                await wakes[0].wait()
            wakes[0] = trio.Event()
            if notified:
                ids = sorted(notified)
                notified.clear()
                await self._apply_ids(conn, ids)

    async def _apply_ids(self, conn: asyncpg.Connection, ids: list[int]) -> None:
        rows = await self._db(store.monitors_by_id, conn, ids, self.config.db_timeout)
        self._apply(rows)
        for monitor_id in set(ids) - {r[0] for r in rows}:
            self.table.remove(monitor_id)
        self._wake_deadlines()

    async def _poll(self, conn: asyncpg.Connection) -> None:
        changed, deleted, xmin = await self._db(
            store.changes_since, conn, self._xmin, self.config.db_timeout
        )
        # Deletions first: a monitor deleted and recreated keeps nothing of the old one.
        present = {r[0] for r in changed}
        for monitor_id in deleted:
            if monitor_id not in present:
                self.table.remove(monitor_id)
        self._apply(changed)
        self._xmin = xmin
        self._wake_deadlines()

    async def _resync(self, conn: asyncpg.Connection) -> None:
        self.table.begin_sync()
        await self._load(conn)
        removed = self.table.end_sync()
        log.info("resynced %d monitors (%d removed)", len(self.table), len(removed))
        self._wake_deadlines()

    # -- deadlines and flushing

    def _wake_deadlines(self) -> None:
        if self.deadlines is not None:
            self.deadlines.wake()

    def _on_events(self, events: list[tuple[int, str, float]], now: float) -> None:
        for _id, kind, at in events:
            if kind == "down" or kind == "incident_opened":
                self.detection_lag.observe(max(0.0, now - at))
        self.pending_events.extend(events)

    async def flush_once(self) -> bool:
        """Write what changed since the last flush; False (and nothing lost) on failure."""
        async with self._flush_lock:
            self.pending_events.extend(self.table.take_events())
            dirty = store.Dirty(*self.table.take_dirty(), self.pending_events)
            self.pending_events = []
            if not dirty:
                self.last_flush = self.clock.now()  # nothing to write: the database is current
                return True
            started = time.perf_counter()
            try:
                with trio.CancelScope(shield=True):
                    if self._flush_conn is None:
                        self._flush_conn = await self._connect("lastseen-ingest-flush")
                    rows, events = await self._db(
                        store.flush, self._flush_conn, dirty, self.config.db_timeout
                    )
            except DB_ERRORS as exc:
                self.flush_failures += 1
                self.db_up = False
                self.table.mark_dirty(dirty.all_ids)
                self.pending_events[:0] = dirty.events
                await self._drop(self._flush_conn)
                self._flush_conn = None
                log.warning(
                    "flush failed (%s): %d monitors and %d events kept for the next one",
                    _why(exc), len(dirty.all_ids), len(self.pending_events),
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
            self._loop = loop
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
                workers.start_soon(self._follow)
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
            await self._drop(self._flush_conn)
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
        fast = self.fast
        table = self.table.statistics()
        lst = self.listener.statistics() if self.listener is not None else None
        statuses = Counter(self.responder.status_counts)
        statuses[204] += fast.answered_204
        statuses[404] += fast.answered_404
        lag = self.flush_lag()
        p = "lastseen_"
        simple: list[tuple[str, str, str, float]] = [
            ("open_connections", "gauge", "Open client connections.",
             lst.open_connections if lst else 0),
            ("connections_accepted_total", "counter", "Connections accepted.",
             lst.accepted if lst else 0),
            ("connections_rejected_total", "counter",
             "Connections closed at once (cap reached, none evictable).",
             lst.rejected if lst else 0),
            ("connections_evicted_total", "counter",
             "Idle or slow connections closed to make room for new ones (cap).",
             lst.evicted if lst else 0),
            ("connections_over_address_limit_total", "counter",
             "Connections answered 503: their address had its share of the cap.",
             lst.over_address_limit if lst else 0),
            ("connection_timeouts_total", "counter", "Connections closed by a deadline.",
             lst.timeouts if lst else 0),
            ("monitors", "gauge", "Monitors loaded.", table["monitors"]),
            ("monitors_scheduled", "gauge", "Monitors with a deadline.", table["scheduled"]),
            ("dirty_monitors", "gauge", "Monitors changed since the last flush.", table["dirty"]),
            ("pending_events", "gauge", "Events not yet flushed.", len(self.pending_events)),
            ("flush_rows_total", "counter", "Monitor rows flushed.", self.flush_rows),
            ("flush_events_total", "counter", "Events flushed.", self.flush_events),
            ("flush_failures_total", "counter", "Failed flushes (state kept).",
             self.flush_failures),
            ("flush_lag_seconds", "gauge", "Seconds since the last successful flush.",
             -1 if math.isinf(lag) else lag),
            ("database_up", "gauge", "1 if the last database call succeeded.", int(self.db_up)),
        ]  # fmt: skip
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
        samples += [(Metric(p + n, k, h), [sample(p + n, v)]) for n, k, h, v in simple]
        return render(samples)


def _log_asyncio_error(_loop: object, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    log.warning(
        "asyncio: %s (%s)", context.get("message", "error"), _why(exc) if exc else "no exception"
    )


def _why(exc: BaseException) -> str:
    # Exception text from asyncpg can quote SQL parameters; the type and SQLSTATE suffice.
    code = getattr(exc, "sqlstate", None)
    return f"{type(exc).__name__}{f' {code}' if code else ''}"
