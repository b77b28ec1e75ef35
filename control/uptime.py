"""Availability over time: the share of each period (an hour, a UTC day) a monitor spent
in an open incident, for the status pages' 90 days and a monitor's timelines.

A period counts only from when monitoring began, the first ping: a monitor waiting for
its first one is not "available", it is not watched yet (no data, share None). Without
an ``up`` event on record (history older than the event log), from its creation.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

# Seconds in an open incident, per monitor and period start (incidents overlapping it).
_DOWN = """
SELECT m.id AS monitor_id, d.start, coalesce(sum(extract(epoch FROM
  least(coalesce(i.resolved_at, $3), d.start + $4::interval)
  - greatest(i.opened_at, d.start))) FILTER (WHERE i.id IS NOT NULL), 0)::float8 AS down
FROM unnest($1::bigint[]) m(id) CROSS JOIN unnest($2::timestamptz[]) d(start)
LEFT JOIN incidents i ON i.monitor_id = m.id AND i.opened_at < d.start + $4::interval
  AND coalesce(i.resolved_at, $3) > d.start
GROUP BY 1, 2
"""
# (least and greatest skip NULLs: the FILTER keeps periods without incidents at 0.)
_FIRST_PING = """
SELECT monitor_id, min(occurred_at) AS at FROM monitor_events
WHERE kind = 'up' AND monitor_id = ANY($1::bigint[]) GROUP BY monitor_id
"""


def starts(now: datetime, width: timedelta, count: int) -> list[datetime]:
    """The starts of the last `count` periods of `width` (an hour or a day, UTC), the
    current one last."""
    if width >= timedelta(days=1):
        current = datetime(now.year, now.month, now.day, tzinfo=UTC)
    else:
        current = datetime(now.year, now.month, now.day, now.hour, tzinfo=UTC)
    return [current - width * (count - 1 - i) for i in range(count)]


async def periods(
    conn: Any,
    monitors: list[Any],
    now: datetime,
    width: timedelta,
    count: int,
) -> dict[int, tuple[list[dict[str, Any]], float | None]]:
    """For each monitor (rows with id, state, created_at): its periods (start, down and
    observed seconds, share down) and its availability over all of them (None: no data)."""
    begins = starts(now, width, count)
    ids = [m["id"] for m in monitors]
    down = {
        (r["monitor_id"], r["start"]): r["down"]
        for r in await conn.fetch(_DOWN, ids, begins, now, width)
    }
    first_ping = {r["monitor_id"]: r["at"] for r in await conn.fetch(_FIRST_PING, ids)}
    out: dict[int, tuple[list[dict[str, Any]], float | None]] = {}
    for m in monitors:
        began = first_ping.get(m["id"])
        if began is None and m["state"] != "pending":
            began = m["created_at"]
        rows = []
        observed_total = down_total = 0.0
        for start in begins:
            begin = max(start, began if began is not None else now)
            end = min(start + width, now)
            observed = max(0.0, (end - begin).total_seconds())
            seconds = min(down.get((m["id"], start), 0.0), observed)
            observed_total += observed
            down_total += seconds
            rows.append({
                "start": start, "downSeconds": round(seconds), "observedSeconds": round(observed),
                "share": seconds / observed if observed > 0 else None,
            })  # fmt: skip
        out[m["id"]] = (rows, (1 - down_total / observed_total) if observed_total else None)
    return out
