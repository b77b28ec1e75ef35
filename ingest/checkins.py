"""Job check-ins (issue 12): the signals a ping URL can carry, and the ping history.

How this works
--------------
``/api/v1/heartbeats/<token>`` is a success, as always. A suffix makes it a signal:
``/start`` (a run began), ``/fail`` (it failed), ``/<0-255>`` (its exit status: 0 is a
success, anything else a failure), ``/log`` (recorded, changes no state). ``?rid=<uuid>``
ties a start to its end when runs overlap. Signals without a body or a query are answered
by the native fast path (``_fastpath.pyx``), which records each in the history's native
log (``_checkinlog.pyx``: C records, no Python object per check-in; ``CheckIns.took_fast``
names their client); the others (a run id, a body) come through h11, ``parse`` reading
the target into a ``Signal`` and ``CheckIns.answer`` answering it.

A failure goes to the table at once (``DeadlineTable.fail``: the incident opens without
waiting); a start does when the monitor has a maxRuntimeSec (``DeadlineTable.start``: the
run must end within it), and a log never. Every signal, and every ping that carried a
body (every ping, with ``LASTSEEN_PING_HISTORY_PLAIN``), becomes a row of the ping
history (migration 0018): ``History`` keeps them in memory and the ingest writes them
in batches off the hot path, the fast path's with a binary COPY per batch (``copy``),
the others' (bodies, run ids) with an INSERT (``write``). A monitor's rows are pruned to
the newest ``keep`` once it has had a tenth of that many new ones (``History.due``, at most every
PRUNE_SECONDS): it may hold a few more than ``keep`` for a while. While the database is
away the rows wait, at most ``MAX_ROWS`` of them and ``MAX_BYTES`` of bodies; past that
the oldest are dropped and counted, never the ping itself (it was answered and judged
already).
"""

from __future__ import annotations

import re
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import parse_qs

import asyncpg

from core import DeadlineTable
from core.proxies import normalise
from core.tokens import digest

from ._checkinlog import COLUMNS as COPY_COLUMNS
from ._checkinlog import MAX_USER_AGENT, CheckinLog
from ._fastpath import PING_PREFIX

SUCCESS, START, FAIL, LOG = "success", "start", "fail", "log"
NO_STATUS = -1  # a signal without an exit status
MAX_ROWS = 100_000
MAX_BYTES = 64 * 1024 * 1024
# A ping body's declared length past this is refused (413): no job's output is that
# large, and reading it would only cost us. Up to it, a body is read and truncated.
MAX_DECLARED_BODY = 64 * 1024 * 1024
PRUNE_SECONDS = 10.0  # how often the monitors due for it have their history cut to `keep`

_TOKEN = re.compile(rb"[0-9a-f]{64}")
_STATUS = re.compile(rb"0|[1-9][0-9]{0,2}")


class Signal(NamedTuple):
    """What a ping URL says: its token, the signal's kind, the exit status it reported
    (NO_STATUS if none) and the run id it carried (None if none or not a UUID)."""

    token: bytes
    kind: str
    status: int
    rid: str | None

    @property
    def plain(self) -> bool:
        """A success without a suffix: the fast path's ping."""
        return self.kind == SUCCESS and self.status == NO_STATUS


def parse(target: bytes) -> Signal | None:
    """The signal a request target carries; None if it is no ping URL at all (another
    route). A well-formed path with a malformed token is a signal of an unknown token:
    its answer is the same 404 as for any token we do not know."""
    path, _, query = target.partition(b"?")
    if not path.startswith(PING_PREFIX):
        return None
    parts = path[len(PING_PREFIX) :].split(b"/")
    if len(parts) == 1:
        kind, status = SUCCESS, NO_STATUS
    elif len(parts) == 2:
        suffix = parts[1]
        if suffix in (b"start", b"fail", b"log"):
            kind, status = suffix.decode(), NO_STATUS
        elif _STATUS.fullmatch(suffix) and int(suffix) <= 255:
            status = int(suffix)
            kind = SUCCESS if status == 0 else FAIL
        else:
            return None
    else:
        return None
    return Signal(parts[0], kind, status, _rid(query))


def token_of(signal: Signal) -> bytes | None:
    """The token, if it has a token's shape (64 lowercase hex characters)."""
    return signal.token if _TOKEN.fullmatch(signal.token) else None


def forwarded_client(value: bytes) -> str:
    """The client a trusted proxy names in X-Forwarded-For: the address it appended."""
    return value.rsplit(b",", 1)[-1].strip().decode("latin-1")


def _rid(query: bytes) -> str | None:
    try:
        values = parse_qs(query.decode("ascii"), max_num_fields=8).get("rid")
        return str(uuid.UUID(values[0])) if values else None
    except (UnicodeDecodeError, ValueError):
        return None


class Row(NamedTuple):
    """One row of the ping history (migration 0018's ``pings``)."""

    monitor_id: int
    at: float  # epoch seconds, when it was answered
    kind: str
    status: int  # NO_STATUS if none
    rid: str | None
    method: str
    client: str | None
    user_agent: str | None
    body: bytes | None  # at most the body limit
    body_bytes: int  # the whole body's size


class Taken(NamedTuple):
    """What the writer took: the rows the slow path made, and the fast path's logs."""

    rows: list[Row]
    logs: list[CheckinLog]

    def __len__(self) -> int:
        return len(self.rows) + sum(map(len, self.logs))

    def all_rows(self) -> list[Row]:
        """Every check-in as a Row, by time (for reading, not writing); at the same time,
        the fast path's first, as the writer writes them."""
        native = [
            Row(monitor_id, at, kind, status, None, method, client, agent, None, 0)
            for log in self.logs
            for monitor_id, at, kind, status, method, client, agent in log.rows()
        ]
        return sorted(native + self.rows, key=lambda r: r.at)


@dataclass
class History:
    """The check-ins waiting to be written, and what became of them: the slow path's
    rows (a run id, a body: ``record``), and the fast path's, which it appends to
    ``native`` itself (``_checkinlog.pyx``)."""

    keep: int = 100  # rows kept per monitor (LASTSEEN_PING_HISTORY)
    written: int = 0
    pruned: int = 0
    failures: int = 0  # writes that failed (what they held waits)

    def __post_init__(self) -> None:
        self._rows: deque[Row] = deque()
        self._bytes = 0
        self._dropped = 0
        self.native = CheckinLog(MAX_ROWS)
        self._waiting: deque[CheckinLog] = deque()  # the fast path's, given back
        # Rows written per monitor since its last prune: a monitor is pruned once it has
        # had `slack` new ones (a flood prunes each monitor every `slack` rows, not every
        # batch; a monitor holds at most keep + slack - 1 rows of this process's).
        self.touched: dict[int, int] = {}

    @property
    def slack(self) -> int:
        return max(1, self.keep // 10)

    @property
    def dropped(self) -> int:
        """Rows that waited past MAX_ROWS/MAX_BYTES while the database was away."""
        return self._dropped + self.native.dropped

    def wrote(self, rows: list[Row]) -> None:
        touched = self.touched
        for r in rows:
            touched[r.monitor_id] = touched.get(r.monitor_id, 0) + 1

    def due(self) -> list[int]:
        """The monitors to prune now (taken off the count)."""
        slack = self.slack
        ids = sorted(m for m, n in self.touched.items() if n >= slack)
        for m in ids:
            del self.touched[m]
        return ids

    def __len__(self) -> int:
        return len(self._rows) + len(self.native) + sum(map(len, self._waiting))

    def record(self, row: Row) -> None:
        self._rows.append(row)
        self._bytes += len(row.body or b"")
        self._trim()

    def _trim(self) -> None:
        """Past MAX_ROWS or MAX_BYTES, the oldest rows go (counted): the fast path's
        given back, a log at a time, then the slow path's."""
        while self._waiting and len(self) > MAX_ROWS:
            self._dropped += len(self._waiting.popleft())
        while len(self._rows) > MAX_ROWS or self._bytes > MAX_BYTES:
            old = self._rows.popleft()
            self._bytes -= len(old.body or b"")
            self._dropped += 1

    def take(self) -> Taken:
        rows = list(self._rows)
        self._rows.clear()
        self._bytes = 0
        logs = list(self._waiting)
        self._waiting.clear()
        if len(self.native):
            logs.append(self.native.take())
        return Taken(rows, logs)

    def give_back(self, taken: Taken) -> None:
        """What could not be written: first in line again (newer ones after)."""
        newer = list(self._rows)
        self._rows.clear()
        self._bytes = 0
        for row in taken.rows + newer:
            self.record(row)
        self._waiting.extendleft(reversed(taken.logs))
        self._trim()


class CheckIns:
    """Answers the pings the fast path does not: signals, and pings with a body."""

    def __init__(self, table: DeadlineTable, history: History) -> None:
        self.table = table
        self.history = history
        self._answered: dict[str, int] = {SUCCESS: 0, START: 0, FAIL: 0, LOG: 0}
        self.unknown = 0

    @property
    def answered(self) -> dict[str, int]:
        """Check-ins answered, by kind: here and by the fast path."""
        native = self.history.native.counts
        return {kind: n + native[kind] for kind, n in self._answered.items()}

    def answer(
        self,
        signal: Signal,
        now: float,
        *,
        method: bytes,
        client: str | None,
        user_agent: bytes | None,
        body: bytes,
        body_bytes: int,
    ) -> bool:
        """Record `signal` answered at `now`; False if no monitor has its token."""
        token = token_of(signal)
        key = digest(token) if token is not None else None
        monitor_id = self.table.lookup(key) if key is not None else None
        if monitor_id is None or key is None:
            self.unknown += 1
            return False
        if signal.kind == SUCCESS:
            self.table.ping(key, now)
        elif signal.kind == FAIL:
            self.table.fail(key, now, signal.status)
        elif signal.kind == START:
            self.table.start(key, now)
        self._record(monitor_id, now, signal.kind, signal.status, signal.rid, method, client,
                     user_agent, body, body_bytes)  # fmt: skip
        return True

    def took_fast(self, client: str | None, proxied: bool) -> None:
        """The fast path answered check-ins on one connection (it has told the table
        already): they came from `client` (the peer's canonical address), or, if `proxied`,
        from the address a trusted proxy appended to X-Forwarded-For."""
        self.history.native.assign(client, proxied, _forwarded_source)

    def _record(
        self,
        monitor_id: int,
        at: float,
        kind: str,
        status: int,
        rid: str | None,
        method: bytes,
        client: str | None,
        user_agent: bytes | None,
        body: bytes,
        body_bytes: int,
    ) -> None:
        self._answered[kind] += 1
        agent = user_agent.decode("latin-1")[:MAX_USER_AGENT] if user_agent else None
        self.history.record(Row(
            monitor_id, at, kind, status, rid, method.decode("ascii"),
            normalise(client) if client else None, agent, body or None, body_bytes,
        ))  # fmt: skip


_INSERT = """
INSERT INTO pings (monitor_id, received_at, kind, exit_status, rid, method, client_addr,
                   user_agent, body, body_bytes)
SELECT r.id, to_timestamp(r.at), r.kind, CASE WHEN r.status >= 0 THEN r.status END,
       r.rid::uuid, r.method, r.client::inet, r.agent, r.body, r.size
FROM unnest($1::bigint[], $2::float8[], $3::text[], $4::int[], $5::text[], $6::text[],
            $7::text[], $8::text[], $9::bytea[], $10::int[])
    AS r(id, at, kind, status, rid, method, client, agent, body, size)
WHERE EXISTS (SELECT 1 FROM monitors m WHERE m.id = r.id)
"""
# The newest `keep` rows of each monitor written to stay; the rest go.
_PRUNE = """
DELETE FROM pings p
USING unnest($1::bigint[]) AS t(id),
      LATERAL (SELECT received_at, id FROM pings q WHERE q.monitor_id = t.id
               ORDER BY q.received_at DESC, q.id DESC OFFSET $2 LIMIT 1) AS edge
WHERE p.monitor_id = t.id
  AND (p.received_at, p.id) <= (edge.received_at, edge.id)
"""


def _forwarded_source(value: bytes) -> str | None:
    return normalise(forwarded_client(value))


async def copy(
    conn: asyncpg.Connection,
    log: CheckinLog,
    table: DeadlineTable | None,
    statement_seconds: float,
) -> int:
    """Write the fast path's check-ins with binary COPY (those of monitors `table` no
    longer has are left out); the rows written."""
    data, n = log.copy_data(table)
    if n:

        async def source() -> AsyncIterator[bytes]:
            yield data

        await conn.copy_to_table(
            "pings", source=source(), columns=list(COPY_COLUMNS), format="binary",
            timeout=statement_seconds,
        )  # fmt: skip
    return n


async def write(conn: asyncpg.Connection, rows: list[Row], statement_seconds: float) -> int:
    """Insert `rows` (those of monitors deleted meanwhile are skipped); the rows inserted.
    Pruning is apart (``prune``), less often: under a flood, once per monitor per
    PRUNE_SECONDS instead of once per batch."""
    columns = [list(c) for c in zip(*rows, strict=True)]  # Row's fields, in _INSERT's order
    async with conn.transaction():
        done: str = await conn.execute(_INSERT, *columns, timeout=statement_seconds)
    return int(done.split()[-1])


async def prune(
    conn: asyncpg.Connection, monitor_ids: list[int], keep: int, statement_seconds: float
) -> int:
    """Keep the newest `keep` rows of each of `monitor_ids`; returns the rows deleted."""
    done: str = await conn.execute(_PRUNE, monitor_ids, keep, timeout=statement_seconds)
    return int(done.split()[-1])
