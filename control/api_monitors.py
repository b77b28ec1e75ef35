"""Heartbeat monitors, and the audited, role-gated read of their tokens."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from core.tokens import digest, new_token

from .app import CallerDep, MonitorWriter, StateDep, audit, page
from .auth import Caller
from .crypto import EnvelopeError, open_envelope, seal
from .errors import ApiError
from .models import INTERVALS, PLAN_FLOORS, MonitorCreate, MonitorUpdate

router = APIRouter()
TOKEN_PURPOSE = "heartbeat-token"

_SELECT = """
SELECT m.*, s.state, s.misses, s.last_seen_at
FROM monitors m LEFT JOIN monitor_state s ON s.monitor_id = m.id
"""
NOT_FOUND = ApiError(404, "not_found", "no such monitor")


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def monitor_json(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "url": row["url"],
        "type": row["type"],
        "intervalSec": row["interval_sec"],
        "timeoutMs": row["timeout_ms"],
        "heartbeatGraceSec": row["grace_sec"],
        "alertThreshold": row["alert_threshold"],
        "alertEmail": row["alert_email"],
        "paused": row["paused"],
        "state": row["state"] or "pending",
        "misses": row["misses"] or 0,
        "lastSeenAt": _iso(row["last_seen_at"]),
        "createdAt": _iso(row["created_at"]),
        "heartbeatToken": row["token_envelope"],
    }


def _check_interval(caller: Caller, interval: int) -> None:
    floor = PLAN_FLOORS.get(caller.plan, 300)
    allowed = [i for i in INTERVALS if i >= floor]
    if interval not in allowed:
        raise ApiError(
            422,
            "invalid",
            f"intervalSec must be one of {', '.join(map(str, allowed))} on the {caller.plan} plan",
            "intervalSec",
        )


@router.post("/monitors", status_code=201)
async def create_monitor(
    body: MonitorCreate, request: Request, caller: MonitorWriter, st: StateDep
) -> dict[str, Any]:
    _check_interval(caller, body.interval_sec)
    token = new_token()
    async with st.pool.acquire() as conn, conn.transaction():
        monitor_id = await conn.fetchval("SELECT nextval('monitors_id_seq')")
        envelope = seal(
            st.keyring, token.encode(), purpose=TOKEN_PURPOSE,
            org_id=caller.org_id, object_id=monitor_id,
        )  # fmt: skip
        await conn.execute(
            "INSERT INTO monitors (id, org_id, name, url, type, interval_sec, timeout_ms,"
            " grace_sec, alert_threshold, alert_email, token_digest, token_envelope)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            monitor_id, caller.org_id, body.name, body.url, body.type, body.interval_sec,
            body.timeout_ms, body.heartbeat_grace_sec, body.alert_threshold, body.alert_email,
            digest(token), envelope,
        )  # fmt: skip
        await audit(conn, caller, request, "CREATE_MONITOR", "monitor", monitor_id)
        row = await conn.fetchrow(_SELECT + " WHERE m.id = $1", monitor_id)
    return monitor_json(row)


@router.get("/monitors")
async def list_monitors(
    caller: CallerDep,
    st: StateDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    after: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    caller.require("monitors:read")
    rows = await st.pool.fetch(
        _SELECT + " WHERE m.org_id = $1 AND m.id > $2 ORDER BY m.id LIMIT $3",
        caller.org_id,
        after,
        limit + 1,
    )
    rows, next_after = page(rows, limit)
    return {"monitors": [monitor_json(r) for r in rows], "nextAfter": next_after}


@router.get("/monitors/{monitor_id}")
async def get_monitor(monitor_id: int, caller: CallerDep, st: StateDep) -> dict[str, Any]:
    caller.require("monitors:read")
    row = await st.pool.fetchrow(
        _SELECT + " WHERE m.id = $1 AND m.org_id = $2", monitor_id, caller.org_id
    )
    if row is None:
        raise NOT_FOUND
    return monitor_json(row)


@router.get("/monitors/{monitor_id}/secrets")
async def read_secrets(
    monitor_id: int, request: Request, caller: CallerDep, st: StateDep
) -> dict[str, Any]:
    """The plaintext token, for owners and admins with secrets:read; always audited.

    The audit entry is written in the same transaction as the read: if it cannot be
    written, no secret leaves.
    """
    allowed = caller.allows("secrets:read")
    async with st.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT id, org_id, token_envelope FROM monitors WHERE id = $1 AND org_id = $2",
            monitor_id,
            caller.org_id,
        )
        if row is None:
            raise NOT_FOUND
        await audit(
            conn, caller, request, "READ_MONITOR_SECRETS", "monitor", monitor_id, allowed=allowed
        )
        if allowed:
            try:
                token = open_envelope(
                    st.keyring, row["token_envelope"], purpose=TOKEN_PURPOSE,
                    org_id=row["org_id"], object_id=row["id"],
                ).decode()  # fmt: skip
            except EnvelopeError as exc:
                raise ApiError(500, "envelope", "the stored token cannot be opened") from exc
    if not allowed:  # the refusal is recorded (committed above), then refused
        raise ApiError(
            403, "forbidden", "reading secrets needs an owner or admin with secrets:read"
        )
    base = str(request.base_url).rstrip("/")
    return {
        "id": monitor_id,
        "heartbeatToken": token,
        "heartbeatUrl": f"{base}/api/v1/heartbeats/{token}",
    }


_COLUMNS = {
    "name": "name",
    "url": "url",
    "type": "type",
    "interval_sec": "interval_sec",
    "timeout_ms": "timeout_ms",
    "heartbeat_grace_sec": "grace_sec",
    "alert_threshold": "alert_threshold",
    "alert_email": "alert_email",
}


async def _change(
    caller: Caller,
    st: Any,
    request: Request,
    monitor_id: int,
    action: str,
    assignments: dict[str, Any],
) -> dict[str, Any]:
    """UPDATE the caller's monitor (404 if not theirs), audit it, return the new row."""
    caller.require("monitors:write")
    columns = list(assignments)
    sets = ", ".join(f"{column} = ${i + 3}" for i, column in enumerate(columns))
    async with st.pool.acquire() as conn, conn.transaction():
        done = await conn.execute(
            f"UPDATE monitors SET {sets} WHERE id = $1 AND org_id = $2",
            monitor_id,
            caller.org_id,
            *assignments.values(),
        )
        if done != "UPDATE 1":
            raise NOT_FOUND
        await audit(conn, caller, request, action, "monitor", monitor_id)
        row = await conn.fetchrow(_SELECT + " WHERE m.id = $1", monitor_id)
    return monitor_json(row)


@router.patch("/monitors/{monitor_id}")
async def update_monitor(
    monitor_id: int, body: MonitorUpdate, request: Request, caller: MonitorWriter, st: StateDep
) -> dict[str, Any]:
    given = body.model_dump(exclude_unset=True)
    for field, value in given.items():
        if value is None and field != "alert_email":
            raise ApiError(422, "invalid", f"{field} cannot be null", field)
    if given.get("interval_sec") is not None:
        _check_interval(caller, given["interval_sec"])
    if not given:
        raise ApiError(422, "invalid", "nothing to change", None)
    assignments = {_COLUMNS[k]: v for k, v in given.items()}
    return await _change(caller, st, request, monitor_id, "UPDATE_MONITOR", assignments)


@router.post("/monitors/{monitor_id}/pause")
async def pause_monitor(
    monitor_id: int, request: Request, caller: CallerDep, st: StateDep
) -> dict[str, Any]:
    return await _change(caller, st, request, monitor_id, "PAUSE_MONITOR", {"paused": True})


@router.post("/monitors/{monitor_id}/resume")
async def resume_monitor(
    monitor_id: int, request: Request, caller: CallerDep, st: StateDep
) -> dict[str, Any]:
    return await _change(caller, st, request, monitor_id, "RESUME_MONITOR", {"paused": False})


@router.post("/monitors/{monitor_id}/rotate-token")
async def rotate_token(
    monitor_id: int, request: Request, caller: CallerDep, st: StateDep
) -> dict[str, Any]:
    """A new token at once; the old one answers 404 from the next second on."""
    token = new_token()
    envelope = seal(
        st.keyring, token.encode(), purpose=TOKEN_PURPOSE,
        org_id=caller.org_id, object_id=monitor_id,
    )  # fmt: skip
    return await _change(
        caller, st, request, monitor_id, "ROTATE_MONITOR_TOKEN",
        {"token_digest": digest(token), "token_envelope": envelope},
    )  # fmt: skip


@router.delete("/monitors/{monitor_id}", status_code=204)
async def delete_monitor(
    monitor_id: int, request: Request, caller: CallerDep, st: StateDep
) -> Response:
    caller.require("monitors:write")
    async with st.pool.acquire() as conn, conn.transaction():
        done = await conn.execute(
            "DELETE FROM monitors WHERE id = $1 AND org_id = $2", monitor_id, caller.org_id
        )
        if done != "DELETE 1":
            raise NOT_FOUND
        await audit(conn, caller, request, "DELETE_MONITOR", "monitor", monitor_id)
    return Response(status_code=204)
