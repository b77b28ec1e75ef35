"""A monitor's check-ins (issue 12): the ping history the ingest writes (migration 0018).

Every signal (start, fail, an exit status, log) and every ping that carried a body is a
row; plain body-less success pings are not (their time is ``lastSeenAt``). A run's
duration is paired here, at read time: an end (success or failure) lasted from the
latest start before it with the same run id (``?rid=``, or none) that no other end
closed already. Bodies are job output and may hold what a job should not have printed:
reading them takes ``pings:read``, which owners, admins and members have and viewers do
not (as healthchecks' read-only keys cannot read ping bodies).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from ..deps import MAX_ID, CallerDep, Id, StateDep, iso, page
from .monitors import require_monitor

router = APIRouter()

# The start an end closes: the latest before it with its run id that no end between
# them closed.
_PINGS = """
SELECT p.id, p.received_at, p.kind, p.exit_status, p.rid, p.method, p.client_addr,
       p.user_agent, p.body, p.body_bytes,
       CASE WHEN p.kind IN ('success', 'fail') THEN (
           SELECT extract(epoch FROM p.received_at - s.received_at)
           FROM pings s
           WHERE s.monitor_id = p.monitor_id AND s.kind = 'start'
             AND s.rid IS NOT DISTINCT FROM p.rid
             AND (s.received_at, s.id) < (p.received_at, p.id)
             AND NOT EXISTS (
                 SELECT 1 FROM pings e
                 WHERE e.monitor_id = p.monitor_id AND e.kind IN ('success', 'fail')
                   AND e.rid IS NOT DISTINCT FROM p.rid
                   AND (e.received_at, e.id) > (s.received_at, s.id)
                   AND (e.received_at, e.id) < (p.received_at, p.id))
           ORDER BY s.received_at DESC, s.id DESC LIMIT 1) END AS duration
FROM pings p
WHERE p.monitor_id = $1
  AND ($2::bigint IS NULL OR (p.received_at, p.id) <
       (SELECT received_at, id FROM pings WHERE id = $2 AND monitor_id = $1))
ORDER BY p.received_at DESC, p.id DESC
LIMIT $3
"""


def ping_json(row: Any) -> dict[str, Any]:
    body: bytes | None = row["body"]
    size: int = row["body_bytes"]
    duration = row["duration"]
    return {
        "id": row["id"],
        "at": iso(row["received_at"]),
        "kind": row["kind"],
        "exitStatus": row["exit_status"],
        "runId": str(row["rid"]) if row["rid"] is not None else None,
        "durationSec": round(float(duration), 3) if duration is not None else None,
        "method": row["method"],
        "clientAddress": str(row["client_addr"]) if row["client_addr"] is not None else None,
        "userAgent": row["user_agent"],
        # Output as text (bytes that are not UTF-8 shown as U+FFFD), and how much of it
        # there was: a body past the limit was kept truncated.
        "body": body.decode("utf-8", "replace") if body is not None else None,
        "bodyBytes": size,
        "bodyTruncated": body is not None and len(body) < size,
    }


@router.get("/monitors/{monitor_id}/pings")
async def list_pings(
    monitor_id: Id,
    caller: CallerDep,
    st: StateDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> dict[str, Any]:
    """The monitor's check-ins, newest first; continue with ?before=<nextBefore>.
    Needs pings:read (bodies are job output)."""
    caller.require("pings:read")
    async with st.pool.acquire() as conn:
        await require_monitor(conn, caller, monitor_id)
        rows = await conn.fetch(_PINGS, monitor_id, before, limit + 1)
    rows, next_before = page(rows, limit)
    return {"pings": [ping_json(r) for r in rows], "nextBefore": next_before}
