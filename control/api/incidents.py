"""Incidents as the alert worker recorded them, with their notifications."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from ..deps import MAX_ID, CallerDep, Id, StateDep, found, iso, page
from ..errors import ApiError

router = APIRouter()
NOT_FOUND = ApiError(404, "not_found", "no such incident")

INCIDENTS = """
SELECT i.id, i.monitor_id, m.name AS monitor_name, i.opened_at, i.resolved_at,
       i.resolved_by, i.last_ping_at, i.expected_at, i.cause, i.exit_status
FROM incidents i JOIN monitors m ON m.id = i.monitor_id
"""


def incident_json(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "monitorId": row["monitor_id"],
        "monitorName": row["monitor_name"],
        "state": "open" if row["resolved_at"] is None else "resolved",
        "openedAt": iso(row["opened_at"]),
        "resolvedAt": iso(row["resolved_at"]),
        "resolvedBy": row["resolved_by"],
        "lastPingAt": iso(row["last_ping_at"]),
        "expectedAt": iso(row["expected_at"]),
        "cause": row["cause"],
        "exitStatus": row["exit_status"],
    }


def notification_json(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "channelId": row["channel_id"],
        "type": row["channel_type"],
        # Who it went to: the channel's name, the monitor's alertEmail, or a status-page
        # subscriber (whose address stays theirs).
        "to": (
            row["channel_name"]
            if row["channel_id"] is not None
            else "a status-page subscriber"
            if row["subscriber_id"] is not None
            else row["address"]
        ),
        "kind": row["kind"],
        "status": row["status"],
        "attempts": row["attempts"],
        "lastError": row["last_error"],
        "nextAttemptAt": iso(row["next_attempt_at"]) if row["status"] == "pending" else None,
        "deliveredAt": iso(row["delivered_at"]),
        "createdAt": iso(row["created_at"]),
    }


async def recent_incidents(conn: Any, org_id: int, monitor_id: int, limit: int) -> list[Any]:
    rows: list[Any] = await conn.fetch(
        INCIDENTS + " WHERE i.org_id = $1 AND i.monitor_id = $2 ORDER BY i.id DESC LIMIT $3",
        org_id, monitor_id, limit,
    )  # fmt: skip
    return rows


@router.get("/incidents")
async def list_incidents(
    caller: CallerDep,
    st: StateDep,
    monitor_id: Annotated[int | None, Query(alias="monitorId", ge=1, le=MAX_ID)] = None,
    state: Literal["open", "resolved"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> dict[str, Any]:
    """Newest first; continue with ?before=<nextBefore>."""
    caller.require("incidents:read")
    rows = await st.pool.fetch(
        INCIDENTS + " WHERE i.org_id = $1 AND ($2::bigint IS NULL OR i.monitor_id = $2)"
        " AND ($3::text IS NULL OR ($3 = 'open') = (i.resolved_at IS NULL))"
        " AND ($4::bigint IS NULL OR i.id < $4) ORDER BY i.id DESC LIMIT $5",
        caller.org_id, monitor_id, state, before, limit + 1,
    )  # fmt: skip
    rows, next_before = page(rows, limit)
    return {"incidents": [incident_json(r) for r in rows], "nextBefore": next_before}


@router.get("/incidents/{incident_id}")
async def get_incident(incident_id: Id, caller: CallerDep, st: StateDep) -> dict[str, Any]:
    caller.require("incidents:read")
    async with st.pool.acquire() as conn:
        row = found(
            await conn.fetchrow(
                INCIDENTS + " WHERE i.id = $1 AND i.org_id = $2", incident_id, caller.org_id
            ),
            NOT_FOUND,
        )
        notifications = await conn.fetch(
            "SELECT n.*, c.name AS channel_name FROM notifications n"
            " LEFT JOIN channels c ON c.id = n.channel_id"
            " WHERE n.incident_id = $1 ORDER BY n.id",
            incident_id,
        )
    return {**incident_json(row), "notifications": [notification_json(n) for n in notifications]}
