"""The ingest's PostgreSQL side: load, flush, and follow configuration changes.

These are asyncio coroutines on asyncpg connections; the trio side (``service.py``) calls
them through trio-asyncio. Every call carries a client-side timeout, so a hung server
(SIGSTOP, a lost network) costs at most that long; the caller then drops the connection
and reconnects.

- ``load``: stream every monitor (configuration and observed state) into the table in
  one REPEATABLE READ transaction, with the seen log's later last-seen times for the
  shards the table judges; return the snapshot's xmin, where ``changes_since`` starts.
- ``flush``: one statement per batch (data-modifying CTEs): the dirty monitors' observed
  state (``monitor_state``), the events in the order they happened, and a NOTIFY for the
  alert worker, with the seen log's row when one is due (``core/seenlog.py``), all in
  one transaction.
- ``changes_since``: monitors whose configuration changed, and monitors deleted, in
  transactions not older than a previous snapshot's xmin (see migration 0001).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import asyncpg

from core import DeadlineTable, schedules, seenlog
from core.records import DirtyRows, Event
from core.schedules import Schedule
from core.shards import SHARDS

from ._copyload import CopyLoader

_MONITORS = """
SELECT m.id, m.token_digest, m.interval_sec, m.grace_sec, m.alert_threshold, m.paused,
       coalesce(s.state, 'pending'), coalesce(s.misses, 0),
       coalesce(extract(epoch FROM s.last_seen_at)::float8, 0.0),
       coalesce(s.incident_open, false), m.recovery_threshold, coalesce(m.max_runtime_sec, 0),
       coalesce(extract(epoch FROM s.started_at)::float8, 0.0), m.schedule, m.tz
FROM monitors m LEFT JOIN monitor_state s ON s.monitor_id = m.id
"""
_LOAD = _MONITORS  # streamed with binary COPY: the columns _copyload expects, in order
_CHANGED = _MONITORS + " WHERE m.config_xid >= $1::text::xid8"
_IN_SHARDS = _MONITORS + " WHERE m.shard = ANY($1::smallint[])"
_CLUSTER_KEY = "SELECT secret FROM cluster_secrets WHERE name = 'handoff'"
_DELETED = "SELECT DISTINCT monitor_id FROM monitor_deletions WHERE deleted_xid >= $1::text::xid8"
_XMIN = "SELECT pg_snapshot_xmin(s)::text, s::text FROM pg_current_snapshot() s"
_APPLIED = "UPDATE ingest_members SET applied = $2::text::pg_snapshot WHERE owner = $1"
_PRUNE_DELETIONS = "DELETE FROM monitor_deletions WHERE deleted_at < now() - interval '1 day'"

_FLUSH = """
WITH seen AS (
    UPDATE monitor_state AS s SET last_seen_at = to_timestamp(d.last_seen)
    FROM unnest($1::bigint[], $2::float8[]) AS d(id, last_seen)
    WHERE s.monitor_id = d.id
    RETURNING 1
), state AS (
    UPDATE monitor_state AS s SET
        last_seen_at = CASE WHEN d.last_seen > 0 THEN to_timestamp(d.last_seen)
                            ELSE s.last_seen_at END,
        state_changed_at = CASE WHEN s.state <> d.state THEN now() ELSE s.state_changed_at END,
        state = d.state,
        misses = d.misses,
        incident_open = d.incident_open,
        started_at = CASE WHEN d.started > 0 THEN to_timestamp(d.started) END
    FROM unnest($3::bigint[], $4::float8[], $5::text[], $6::int[], $7::bool[], $13::float8[])
        AS d(id, last_seen, state, misses, incident_open, started)
    WHERE s.monitor_id = d.id
    RETURNING 1
), events AS (
    INSERT INTO monitor_events (monitor_id, kind, occurred_at, last_seen_at, exit_status)
    SELECT e.id, e.kind, to_timestamp(e.at),
           CASE WHEN e.seen > 0 THEN to_timestamp(e.seen) END,
           CASE WHEN e.status >= 0 THEN e.status END
    FROM unnest($8::bigint[], $9::text[], $10::float8[], $11::float8[], $12::int[])
        WITH ORDINALITY AS e(id, kind, at, seen, status, n)
    ORDER BY e.n
    ON CONFLICT (monitor_id, kind, occurred_at) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM seen) + (SELECT count(*) FROM state) AS rows,
       (SELECT count(*) FROM events) AS events,
       CASE WHEN cardinality($8::bigint[]) > 0 THEN pg_notify('lastseen_events', '') END
"""

BATCH_ROWS = 5_000  # rows per statement: the event loop runs pings between batches


class MonitorRow(NamedTuple):
    """A monitor as the ingest loads it: _MONITORS' columns, in their order (the binary
    COPY of the initial load, ``_copyload``, reads the same columns in the same order)."""

    id: int
    digest: bytes
    interval: int
    grace: int
    threshold: int
    paused: bool
    state: str
    misses: int
    last_seen: float  # epoch seconds; 0.0 if never
    incident_open: bool
    recovery: int  # pings in a row that resolve an open incident
    max_runtime: int  # seconds a run may take, 0: no deadline
    started: float  # the open run's start (epoch seconds), 0.0: none
    schedule: str | None  # a cron expression (core/schedules.py), None: every `interval`
    tz: str | None

    def expected(self) -> Schedule | None:
        """The monitor's schedule (shared: one object per expression and zone); a
        ScheduleError (a ValueError) if the stored one cannot be used."""
        return (
            None if self.schedule is None else schedules.schedule(self.schedule, self.tz or "UTC")
        )


class SeenRow(NamedTuple):
    """A row of the seen log, packed (``seenlog.pack``)."""

    base_ms: int
    shards: list[int]
    fulls: list[bool]
    starts: list[int]
    lens: list[int]
    data: bytes
    entries: int  # monitors in it, for the metrics


@dataclass(frozen=True)
class Dirty:
    """What a flush writes: the table's dirty rows (DeadlineTable.take_dirty()), the
    events since the last flush, and the seen log's row if one is due."""

    rows: DirtyRows
    events: list[Event]
    seen: SeenRow | None = None

    def __bool__(self) -> bool:
        return bool(self.rows.seen_ids or self.rows.ids or self.events or self.seen)

    @property
    def all_ids(self) -> list[int]:
        return self.rows.seen_ids + self.rows.ids


async def connect(dsn: str, statement_seconds: float, application: str) -> asyncpg.Connection:
    return await asyncpg.connect(
        dsn,
        timeout=statement_seconds,
        command_timeout=statement_seconds,
        server_settings={
            "application_name": application,
            "statement_timeout": str(int(statement_seconds * 1000)),
            "idle_in_transaction_session_timeout": str(int(statement_seconds * 2000)),
        },
    )


class Snapshot(NamedTuple):
    """Where a load or a poll read the configuration: its snapshot's xmin (where the
    next poll starts) and the whole snapshot (what this process has applied)."""

    xmin: str
    snapshot: str


async def load(
    conn: asyncpg.Connection, table: DeadlineTable, now: float, statement_seconds: float
) -> tuple[Snapshot, int, list[tuple[int, str]]]:
    """Stream every monitor into `table` (binary COPY, parsed as it arrives).

    Returns the snapshot, the rows loaded, and the rows refused with why.
    """
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        snapshot = Snapshot(*await conn.fetchrow(_XMIN, timeout=statement_seconds))
        seen = await seenlog.read(conn, table.owned(), statement_seconds)
        loader = CopyLoader(table, now, seen)

        async def sink(chunk: bytes) -> None:
            loader.feed(chunk)

        await conn.copy_from_query(_LOAD, output=sink, format="binary")
    loader.close()
    return snapshot, loader.rows, loader.errors


async def count(conn: asyncpg.Connection, statement_seconds: float) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM monitors", timeout=statement_seconds))


async def changes_since(
    conn: asyncpg.Connection, xmin: str, statement_seconds: float
) -> tuple[list[MonitorRow], list[int], Snapshot]:
    """Changed monitors, deleted ids, and the snapshot they were read in (its xmin is
    the one to pass next time): every change visible in it is among them."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        snapshot = Snapshot(*await conn.fetchrow(_XMIN, timeout=statement_seconds))
        changed = [
            MonitorRow(*r) for r in await conn.fetch(_CHANGED, xmin, timeout=statement_seconds)
        ]
        deleted = [r[0] for r in await conn.fetch(_DELETED, xmin, timeout=statement_seconds)]
    return changed, deleted, snapshot


async def mark_applied(
    conn: asyncpg.Connection, owner: str, snapshot: str | None, statement_seconds: float
) -> None:
    """Say that this process (`owner`) has applied every change visible in `snapshot`
    (None: nothing yet, a process starting)."""
    await conn.execute(_APPLIED, owner, snapshot, timeout=statement_seconds)


async def monitors_in_shards(
    conn: asyncpg.Connection, shards: list[int], statement_seconds: float
) -> list[MonitorRow]:
    """The monitors of `shards`, with the seen log's later last-seen times."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        rows = await conn.fetch(_IN_SHARDS, shards, timeout=statement_seconds)
        seen = await seenlog.read(conn, shards, statement_seconds)
    out = []
    for r in rows:
        row = MonitorRow(*r)
        logged = seen.get(row.id, 0.0)
        out.append(row._replace(last_seen=logged) if logged > row.last_seen else row)
    return out


async def cluster_key(conn: asyncpg.Connection, statement_seconds: float) -> bytes:
    """The key that authenticates hand-offs between ingest processes (migration 0010)."""
    return bytes(await conn.fetchval(_CLUSTER_KEY, timeout=statement_seconds))


async def prune_deletions(conn: asyncpg.Connection, statement_seconds: float) -> None:
    await conn.execute(_PRUNE_DELETIONS, timeout=statement_seconds)


async def prune_seen(conn: asyncpg.Connection, statement_seconds: float) -> int:
    """Delete the seen log's rows every shard has a later full section for."""
    done: str = await conn.execute(seenlog.PRUNE, SHARDS, timeout=statement_seconds)
    return int(done.split()[-1])


Fence = Callable[[asyncpg.Connection], Awaitable[None]]


async def flush(
    conn: asyncpg.Connection, dirty: Dirty, statement_seconds: float, fence: Fence | None = None
) -> tuple[int, int]:
    """Write `dirty` in one transaction; returns (monitor rows, events) written. `fence`
    runs first inside it (``Leases.fence``): if it raises, nothing is written."""
    rows = events = 0
    async with conn.transaction():
        if fence is not None:
            await fence(conn)
        if dirty.seen is not None:
            s = dirty.seen
            await conn.execute(
                seenlog.WRITE, s.base_ms, s.shards, s.fulls, s.starts, s.lens, s.data,
                timeout=statement_seconds,
            )  # fmt: skip
        d = dirty.rows
        n = max(len(d.seen_ids), len(d.ids), 1)
        for start in range(0, n, BATCH_ROWS):
            end = start + BATCH_ROWS
            # The events go with the first batch: one NOTIFY, in order.
            batch_events = dirty.events if start == 0 else []
            record: Any = await conn.fetchrow(
                _FLUSH,
                d.seen_ids[start:end],
                d.seen_last_seen[start:end],
                d.ids[start:end],
                d.last_seen[start:end],
                d.states[start:end],
                d.misses[start:end],
                d.incidents[start:end],
                [e.monitor_id for e in batch_events],
                [e.kind for e in batch_events],
                [e.at for e in batch_events],
                [e.last_seen for e in batch_events],
                [e.status for e in batch_events],
                d.started[start:end],
                timeout=statement_seconds,
            )
            rows += record["rows"]
            events += record["events"]
    return rows, events


_BLIND_BEGUN = """
INSERT INTO blind_periods (owner, since, detected_at, late, heard, unknown_peak, back_at,
                           ended_at)
VALUES ($1, to_timestamp($2), to_timestamp($3), $4, $5, $6, to_timestamp($7),
        to_timestamp($8))
RETURNING id
"""
_BLIND_ENDED = """
UPDATE blind_periods SET unknown_peak = $2, back_at = to_timestamp($3),
       ended_at = to_timestamp($4)
WHERE id = $1
"""


async def end_blind_periods(conn: asyncpg.Connection, owner: str, statement_seconds: float) -> None:
    """At start: a blind period this owner left open (it was stopped or killed while
    blind, and comes back under the same name) is over; this process judges afresh."""
    await conn.execute(
        "UPDATE blind_periods SET ended_at = now() WHERE owner = $1 AND ended_at IS NULL",
        owner, timeout=statement_seconds,
    )  # fmt: skip


async def write_blind_periods(
    conn: asyncpg.Connection, owner: str, periods: list[Any], statement_seconds: float
) -> None:
    """Record blind periods (``ingest.sight.Period``, begun or ended): a new one gets its
    row (and ``row_id``), a known one its end."""
    for p in periods:
        if p.row_id is None:
            p.row_id = await conn.fetchval(
                _BLIND_BEGUN, owner, p.since, p.detected_at, p.late, p.heard, p.unknown_peak,
                p.back_at, p.ended_at, timeout=statement_seconds,
            )  # fmt: skip
        else:
            await conn.execute(
                _BLIND_ENDED, p.row_id, p.unknown_peak, p.back_at, p.ended_at,
                timeout=statement_seconds,
            )  # fmt: skip
