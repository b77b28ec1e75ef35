"""Last-seen times, persisted coarsely: the database diet of issue 11.

A ping to an up monitor changes nothing but its last-seen time. Writing that time into
``monitor_state`` once per ping cost about 108 bytes of WAL each (a row update), which at
a million monitors on 30 s is 33,000 updates and ~330 GB of WAL a day. Instead, each
ingest process appends one row to ``seen_log`` (migration 0011) every
``LASTSEEN_SEEN_SECONDS`` (10 s):
the last-seen times that rose since its previous row, for the shards it owns, packed per
shard (a *section*). State changes (pending -> up, down, recovered) are untouched: they
still go to ``monitor_state`` with their last-seen time within a flush (~1 s).

A monitor's last-seen time is therefore the latest of ``monitor_state.last_seen_at`` and
every entry for it in its shard's sections (``read``). So that readers stay cheap, the
owner rewrites each of its shards in full (every monitor of the shard seen at least
once) once every ``FULL_ROUND`` rows, a few shards per row (5 minutes at the default
10 s); rows older than every shard's latest full section are deleted (``PRUNE``). Every row is
written under the owner's fence, so an owner that lost a shard writes nothing of it.

A section: the entries sorted by monitor id; the id gaps and the times (milliseconds
from the row's ``base_ms``, floored, so never later than the ping) as little-endian int64,
split into byte planes (byte 0 of every value, then byte 1, ...: the high bytes are
mostly equal and compress away) and deflated. About 4.5 bytes per entry measured (see
``benchmarks/wal.py``). The planes are laid out natively (``_seenpack.pyx``: a row's
sections in one sort), deflate is zlib's; decoding is zlib and array work, in C.
"""

from __future__ import annotations

import array
import sys
import zlib
from collections.abc import Iterable, Sequence
from itertools import accumulate
from typing import Any

from ._seenpack import planes

# Rows per round of full sections. A full section costs what a delta entry does, per
# monitor: every 30 intervals adds ~1/10 to a 30 s fleet's cost (3 pings per interval),
# and keeps an hourly monitor's under half of a row update per ping.
FULL_ROUND = 30
_WIDTH = 8  # bytes per value

READ = """
SELECT l.base_ms, substring(l.data FROM o.start + 1 FOR o.len) AS section
FROM seen_log l, unnest(l.shards, l.starts, l.lens) AS o(shard, start, len)
WHERE o.shard = ANY($1::smallint[]) AND o.len > 0
"""
WRITE = """
INSERT INTO seen_log (base_ms, shards, fulls, starts, lens, data)
VALUES ($1, $2::smallint[], $3::bool[], $4::int[], $5::int[], $6)
"""
# Rows all of whose sections are older than their shard's latest full section; nothing
# until every shard has had a full section (a shard that never had one may still need
# its oldest rows).
PRUNE = """
DELETE FROM seen_log WHERE id < (
    SELECT min(latest) FROM (
        SELECT o.shard, max(l.id) AS latest
        FROM seen_log l, unnest(l.shards, l.fulls) AS o(shard, full_)
        WHERE o.full_ GROUP BY o.shard
    ) f HAVING count(*) = $1
)
"""


def encode(ids: Sequence[int], times: Sequence[float], base_ms: int) -> bytes:
    """One section: monitors `ids` last seen at `times` (epoch seconds)."""
    return compress(planes(ids, times, base_ms))


def compress(section_planes: bytes) -> bytes:
    """A section as written: its planes (``_seenpack``) deflated."""
    return zlib.compress(section_planes, 6, -15)


def decode(section: bytes, base_ms: int) -> tuple[list[int], list[float]]:
    """The ids and times of a section written by ``encode`` with the same `base_ms`."""
    try:
        planes = zlib.decompress(section, -15)
    except zlib.error as exc:
        raise ValueError(f"not a seen_log section ({exc})") from None
    count = len(planes) // _WIDTH
    if count * _WIDTH != len(planes) or count % 2:
        raise ValueError("not a seen_log section")
    raw = bytearray(len(planes))
    for b in range(_WIDTH):
        raw[b::_WIDTH] = planes[b * count : (b + 1) * count]
    values = array.array("q")
    values.frombytes(raw)
    if sys.byteorder == "big":
        values.byteswap()
    n = count // 2
    ids = list(accumulate(values[:n]))
    times = [(base_ms + ms) / 1000 for ms in values[n:]]
    return ids, times


def pack(
    sections: Iterable[tuple[int, bool, Sequence[int], Sequence[float]]], base_ms: int
) -> tuple[list[int], list[bool], list[int], list[int], bytes]:
    """A row's columns from (shard, full, ids, times) sections: shards, fulls, starts,
    lens, data."""
    return assemble(
        (shard, full, encode(ids, times, base_ms) if ids else b"")
        for shard, full, ids, times in sections
    )


def assemble(
    sections: Iterable[tuple[int, bool, bytes]],
) -> tuple[list[int], list[bool], list[int], list[int], bytes]:
    """A row's columns from (shard, full, encoded section) sections: shards, fulls,
    starts, lens, data."""
    shards: list[int] = []
    fulls: list[bool] = []
    starts: list[int] = []
    lens: list[int] = []
    parts: list[bytes] = []
    at = 0
    for shard, full, blob in sections:
        shards.append(shard)
        fulls.append(full)
        starts.append(at)
        lens.append(len(blob))
        parts.append(blob)
        at += len(blob)
    return shards, fulls, starts, lens, b"".join(parts)


async def read(
    conn: Any, shards: Iterable[int], statement_seconds: float | None = None
) -> dict[int, float]:
    """Monitor id -> last-seen time, the latest in every section of `shards` (an asyncpg
    connection). Combine with ``monitor_state.last_seen_at`` by taking the later."""
    wanted = sorted(set(shards))
    latest: dict[int, float] = {}
    if not wanted:
        return latest
    get = latest.get
    for record in await conn.fetch(READ, wanted, timeout=statement_seconds):
        ids, times = decode(record["section"], record["base_ms"])
        for monitor_id, at in zip(ids, times, strict=True):
            if at > get(monitor_id, 0.0):
                latest[monitor_id] = at
    return latest


_PERSISTED = """
SELECT m.id, m.shard, coalesce(extract(epoch FROM s.last_seen_at)::float8, 0.0) AS at
FROM monitors m LEFT JOIN monitor_state s ON s.monitor_id = m.id
WHERE $1::bigint[] IS NULL OR m.id = ANY($1::bigint[])
"""


async def persisted(
    conn: Any, ids: Sequence[int] | None = None, statement_seconds: float | None = None
) -> dict[int, float]:
    """Monitor id -> last-seen time as the database holds it (0.0: never), for `ids` (or
    every monitor): the later of ``monitor_state`` and the seen log."""
    rows = await conn.fetch(
        _PERSISTED, None if ids is None else list(ids), timeout=statement_seconds
    )
    logged = await read(conn, {r["shard"] for r in rows}, statement_seconds)
    return {r["id"]: max(r["at"], logged.get(r["id"], 0.0)) for r in rows}
