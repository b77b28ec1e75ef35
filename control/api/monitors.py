"""Heartbeat monitors, and the audited, role-gated read of their tokens."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response

from core import seenlog
from core.schedules import Schedule, ScheduleError, schedule
from core.tokens import digest, new_token
from notifier.base import Notice

from .. import applied, quotas, uptime
from ..auth import Caller
from ..crypto import TOKEN_PURPOSE, EnvelopeError, open_envelope, seal
from ..delivery import Target, attempt
from ..deps import (
    MAX_ID,
    TEST_ALERTS_PER_MINUTE,
    CallerDep,
    Id,
    MonitorWriter,
    StateDep,
    audit,
    delete_owned,
    found,
    iso,
    page,
    patch_fields,
)
from ..errors import ApiError
from ..models import (
    INTERVALS,
    PERIOD_MAX,
    PERIOD_MIN,
    PLAN_FLOORS,
    MonitorCreate,
    MonitorUpdate,
)
from .incidents import incident_json, recent_incidents

router = APIRouter()

_SELECT = """
SELECT m.*, s.state, s.misses, s.last_seen_at,
       ARRAY(SELECT channel_id FROM monitor_channels c WHERE c.monitor_id = m.id
             ORDER BY channel_id) AS channel_ids,
       (SELECT i.expected_at FROM incidents i
        WHERE i.monitor_id = m.id AND i.resolved_at IS NULL) AS down_since,
       now() AS read_at
FROM monitors m LEFT JOIN monitor_state s ON s.monitor_id = m.id
"""
NOT_FOUND = ApiError(404, "not_found", "no such monitor")


async def require_monitor(conn: Any, caller: Caller, monitor_id: int) -> None:
    """404 unless the monitor is the caller's organisation's."""
    if not await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM monitors WHERE id = $1 AND org_id = $2)",
        monitor_id, caller.org_id,
    ):  # fmt: skip
        raise NOT_FOUND


RECENT_INCIDENTS = 20


async def seen_times(conn: Any, rows: list[Any]) -> dict[int, float]:
    """The seen log's last-seen times for `rows` (core/seenlog.py): an up monitor's pings
    reach the database there, within ~10 s; monitor_state has the state changes'."""
    return await seenlog.read(conn, {r["shard"] for r in rows})


def _last_seen(row: Any, seen: dict[int, float]) -> datetime | None:
    at: datetime | None = row["last_seen_at"]
    logged = seen.get(row["id"])
    if logged is not None and (at is None or logged > at.timestamp()):
        return datetime.fromtimestamp(logged, UTC)
    return at


MISSES_COUNTED = 1_000  # scheduled runs counted one by one; beyond, by their average gap


def _misses(row: Any) -> int:
    """Missed deadlines so far. The ingest stops counting once the incident opens (it
    has nothing more to decide), so a down monitor's count goes on here: one at the
    deadline first missed, one more each interval since (for a schedule: each scheduled
    run since whose deadline, run + grace, has passed, as the ingest counts them)."""
    stored: int = row["misses"] or 0
    since = row["down_since"]
    if row["state"] != "down" or since is None:
        return stored
    elapsed = (row["read_at"] - since).total_seconds()
    if row["schedule"] is None:
        return max(stored, 1 + int(elapsed // row["interval_sec"]))
    return max(stored, 1 + _runs_missed(row, since.timestamp(), row["read_at"].timestamp()))


def _runs_missed(row: Any, first: float, now: float) -> int:
    """Scheduled runs after the one first missed (its deadline `first`) whose deadline
    has passed by `now`."""
    grace = row["grace_sec"]
    runs = schedule(row["schedule"], row["tz"])
    at, n = first - grace, 0
    while n < MISSES_COUNTED:
        at = runs.next_after(at)
        if at + grace > now:
            return n
        n += 1
    gap = (at - (first - grace)) / n  # the average over the runs counted
    return n + int((now - grace - at) // gap)


def monitor_json(row: Any, seen: dict[int, float]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "url": row["url"],
        "type": row["type"],
        "intervalSec": row["interval_sec"],
        "periodSec": row["interval_sec"],
        "timeoutMs": row["timeout_ms"],
        "heartbeatGraceSec": row["grace_sec"],
        "alertThreshold": row["alert_threshold"],
        "recoveryThreshold": row["recovery_threshold"],
        "maxRuntimeSec": row["max_runtime_sec"],
        "schedule": row["schedule"],
        "tz": row["tz"],
        "nextExpectedAt": iso(_next_expected(row, seen)),
        "alertEmail": row["alert_email"],
        "paused": row["paused"],
        "state": row["state"] or "pending",
        "misses": _misses(row),
        "lastSeenAt": iso(_last_seen(row, seen)),
        "createdAt": iso(row["created_at"]),
        "channelIds": list(row["channel_ids"]),
        "heartbeatToken": row["token_envelope"],
    }


def _next_expected(row: Any, seen: dict[int, float]) -> datetime | None:
    """When the monitor goes late if no ping arrives: its next run expected after the
    last ping (its schedule's, or a period later), + grace. None while pending (no
    deadline yet), paused or down (late already). After a restart of lastseen the ingest
    may allow more (its amnesty); never less."""
    last = _last_seen(row, seen)
    if row["paused"] or row["state"] != "up" or last is None:
        return None
    at = last.timestamp()
    if row["schedule"] is not None:
        expected = schedule(row["schedule"], row["tz"]).next_after(at)
    else:
        expected = at + row["interval_sec"]
    return datetime.fromtimestamp(expected + row["grace_sec"], UTC)


def _schedule_of(caller: Caller, expression: str, tz: str | None) -> tuple[Schedule, int]:
    """A schedule the caller may have, and the period it stands for (its shortest gap
    between runs): what the plan's floor is held against."""
    try:
        parsed = Schedule(expression, tz or "UTC")
    except ScheduleError as exc:
        raise ApiError(422, "invalid", str(exc), exc.field) from None
    gap = parsed.shortest_gap(datetime.now(UTC).timestamp())
    if gap == float("inf"):
        raise ApiError(422, "invalid", "schedule never runs: no time matches it", "schedule")
    floor = max(PERIOD_MIN, PLAN_FLOORS.get(caller.plan, 300))
    if gap < floor:
        raise ApiError(
            422, "invalid",
            f"schedule runs {int(gap)} s apart at its closest; the {caller.plan} plan's"
            f" shortest period is {floor} s", "schedule",
        )  # fmt: skip
    return parsed, int(min(gap, PERIOD_MAX))


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


def _period(
    caller: Caller, interval: int | None, period: int | None, *, required: bool
) -> int | None:
    """The monitor's period in seconds, from `intervalSec` (the hosted service's values)
    or `periodSec` (ours: a minute to a year), never both; the plan's floor holds for
    either. None when neither is given and none is `required` (a PATCH)."""
    if interval is not None and period is not None:
        raise ApiError(422, "invalid", "give intervalSec or periodSec, not both", "periodSec")
    if interval is not None:
        _check_interval(caller, interval)
        return interval
    if period is not None:
        floor = max(PERIOD_MIN, PLAN_FLOORS.get(caller.plan, 300))
        if period < floor:
            raise ApiError(
                422, "invalid",
                f"periodSec must be at least {floor} on the {caller.plan} plan", "periodSec",
            )  # fmt: skip
        return period
    if required:
        raise ApiError(
            422, "invalid",
            f"intervalSec (one of {', '.join(map(str, INTERVALS))}) or periodSec (60 s to"
            " 365 days) is required", "intervalSec",
        )  # fmt: skip
    return None


@router.post("/monitors", status_code=201)
async def create_monitor(
    body: MonitorCreate, request: Request, caller: MonitorWriter, st: StateDep
) -> dict[str, Any]:
    expression = tz = None
    if body.schedule is not None:
        if body.interval_sec is not None or body.period_sec is not None:
            raise ApiError(
                422, "invalid", "give schedule or intervalSec/periodSec, not both", "schedule"
            )
        parsed, period = _schedule_of(caller, body.schedule, body.tz)
        expression, tz = parsed.expression, parsed.tz
    elif body.tz is not None:
        raise ApiError(422, "invalid", "tz goes with schedule (a cron expression)", "tz")
    else:
        given = _period(caller, body.interval_sec, body.period_sec, required=True)
        assert given is not None  # required: it raised otherwise
        period = given
    token = new_token()
    async with st.pool.acquire() as conn, conn.transaction():
        await quotas.check(
            conn, "monitors", caller.org_id, st.settings.max_monitors_per_org, "monitors"
        )
        monitor_id = await conn.fetchval("SELECT nextval('monitors_id_seq')")
        envelope = seal(
            st.keyring, token.encode(), purpose=TOKEN_PURPOSE,
            org_id=caller.org_id, object_id=monitor_id,
        )  # fmt: skip
        await conn.execute(
            "INSERT INTO monitors (id, org_id, name, url, type, interval_sec, timeout_ms,"
            " grace_sec, alert_threshold, alert_email, token_digest, token_envelope,"
            " recovery_threshold, max_runtime_sec, schedule, tz)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            monitor_id, caller.org_id, body.name, body.url, body.type, period,
            body.timeout_ms, body.heartbeat_grace_sec, body.alert_threshold, body.alert_email,
            digest(token), envelope, body.recovery_threshold, body.max_runtime_sec,
            expression, tz,
        )  # fmt: skip
        await _set_channels(conn, caller, monitor_id, body.channel_ids)
        await audit(conn, caller, request, "CREATE_MONITOR", "monitor", monitor_id)
        row = await conn.fetchrow(_SELECT + " WHERE m.id = $1", monitor_id)
        seen = await seen_times(conn, [row])
        xid = await conn.fetchval(applied.XID)
    await applied.wait(st.pool, xid, st.settings.lease)  # 201 means pingable
    return monitor_json(row, seen)


async def _set_channels(
    conn: Any, caller: Caller, monitor_id: int, channel_ids: list[int] | None
) -> None:
    """Replace the monitor's channels; every id must be one of the caller's channels."""
    if channel_ids is None:
        return
    wanted = sorted(set(channel_ids))
    found = await conn.fetch(
        "SELECT id FROM channels WHERE org_id = $1 AND id = ANY($2::bigint[])",
        caller.org_id,
        wanted,
    )
    missing = sorted(set(wanted) - {r["id"] for r in found})
    if missing:
        raise ApiError(422, "invalid", f"no such channel: {missing[0]}", "channelIds")
    await conn.execute("DELETE FROM monitor_channels WHERE monitor_id = $1", monitor_id)
    await conn.execute(
        "INSERT INTO monitor_channels (monitor_id, channel_id) SELECT $1, unnest($2::bigint[])",
        monitor_id, wanted,
    )  # fmt: skip


@router.get("/monitors")
async def list_monitors(
    caller: CallerDep,
    st: StateDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> dict[str, Any]:
    caller.require("monitors:read")
    async with st.pool.acquire() as conn:
        rows = await conn.fetch(
            _SELECT + " WHERE m.org_id = $1 AND m.id > $2 ORDER BY m.id LIMIT $3",
            caller.org_id,
            after,
            limit + 1,
        )
        rows, next_after = page(rows, limit)
        seen = await seen_times(conn, rows)
    return {"monitors": [monitor_json(r, seen) for r in rows], "nextAfter": next_after}


@router.get("/monitors/{monitor_id}")
async def get_monitor(monitor_id: Id, caller: CallerDep, st: StateDep) -> dict[str, Any]:
    caller.require("monitors:read")
    async with st.pool.acquire() as conn:
        row = found(
            await conn.fetchrow(
                _SELECT + " WHERE m.id = $1 AND m.org_id = $2", monitor_id, caller.org_id
            ),
            NOT_FOUND,
        )
        incidents = await recent_incidents(conn, caller.org_id, monitor_id, RECENT_INCIDENTS)
        seen = await seen_times(conn, [row])
    return {**monitor_json(row, seen), "incidents": [incident_json(i) for i in incidents]}


@router.get("/monitors/{monitor_id}/events")
async def monitor_events(
    monitor_id: Id,
    caller: CallerDep,
    st: StateDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """The monitor's state history as the ingest recorded it, newest first."""
    caller.require("monitors:read")
    async with st.pool.acquire() as conn:
        await require_monitor(conn, caller, monitor_id)
        rows = await conn.fetch(
            "SELECT kind, occurred_at, exit_status FROM monitor_events WHERE monitor_id = $1"
            " ORDER BY id DESC LIMIT $2",
            monitor_id, limit,
        )  # fmt: skip
    return {"events": [_event_json(r) for r in rows]}


def _event_json(row: Any) -> dict[str, Any]:
    event = {"kind": row["kind"], "at": iso(row["occurred_at"])}
    if row["kind"] == "failed":
        event["exitStatus"] = row["exit_status"]
    return event


# A timeline's periods: the last 24 hours by the hour, the last 90 days by the UTC day.
TIMELINES = {"hour": (timedelta(hours=1), 24), "day": (timedelta(days=1), 90)}


@router.get("/monitors/{monitor_id}/uptime")
async def monitor_uptime(
    monitor_id: Id,
    caller: CallerDep,
    st: StateDep,
    period: Literal["hour", "day"] = "day",
) -> dict[str, Any]:
    """The share of each period (the last 24 hours, or 90 days) the monitor spent in an
    open incident, and its availability over them; periods before its first ping have
    no data (share null)."""
    caller.require("monitors:read")
    width, count = TIMELINES[period]
    async with st.pool.acquire() as conn:
        row = found(
            await conn.fetchrow(
                "SELECT m.id, m.created_at, coalesce(s.state, 'pending') AS state, now() AS now"
                " FROM monitors m LEFT JOIN monitor_state s ON s.monitor_id = m.id"
                " WHERE m.id = $1 AND m.org_id = $2",
                monitor_id, caller.org_id,
            ),
            NOT_FOUND,
        )  # fmt: skip
        periods, availability = (await uptime.periods(conn, [row], row["now"], width, count))[
            row["id"]
        ]
    return {
        "period": period,
        "availability": availability,
        "periods": [{**p, "start": iso(p["start"])} for p in periods],
    }


@router.get("/monitors/{monitor_id}/secrets")
async def read_secrets(
    monitor_id: Id, request: Request, caller: CallerDep, st: StateDep
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
    "recovery_threshold": "recovery_threshold",
    "max_runtime_sec": "max_runtime_sec",
    "schedule": "schedule",
    "tz": "tz",
    "alert_email": "alert_email",
}


async def _change(
    caller: Caller,
    st: Any,
    request: Request,
    monitor_id: int,
    action: str,
    assignments: dict[str, Any],
    channel_ids: list[int] | None = None,
) -> dict[str, Any]:
    """UPDATE the caller's monitor (404 if not theirs), audit it, return the new row."""
    caller.require("monitors:write")
    sets = ", ".join(f"{column} = ${i + 3}" for i, column in enumerate(["id", *assignments]))
    async with st.pool.acquire() as conn, conn.transaction():
        if "token_digest" in assignments:
            await _keep_last_seen(conn, monitor_id)
        done = await conn.execute(
            f"UPDATE monitors SET {sets} WHERE id = $1 AND org_id = $2",
            monitor_id,
            caller.org_id,
            monitor_id,
            *assignments.values(),
        )
        if done != "UPDATE 1":
            raise NOT_FOUND
        await _set_channels(conn, caller, monitor_id, channel_ids)
        await audit(conn, caller, request, action, "monitor", monitor_id)
        row = await conn.fetchrow(_SELECT + " WHERE m.id = $1", monitor_id)
        seen = await seen_times(conn, [row])
        xid = await conn.fetchval(applied.XID)
    await applied.wait(st.pool, xid, st.settings.lease)  # as every ingest now answers
    return monitor_json(row, seen)


async def _keep_last_seen(conn: Any, monitor_id: int) -> None:
    """A new token may move the monitor to another shard, whose seen log sections do not
    have it: its last-seen time from the old shard's goes into monitor_state first (in
    the change's transaction: another organisation's monitor rolls it back)."""
    logged = (await seenlog.persisted(conn, [monitor_id])).get(monitor_id, 0.0)
    if logged > 0:
        await conn.execute(
            "UPDATE monitor_state SET last_seen_at = to_timestamp($2) WHERE monitor_id = $1"
            " AND (last_seen_at IS NULL OR last_seen_at < to_timestamp($2))",
            monitor_id, logged,
        )  # fmt: skip


@router.patch("/monitors/{monitor_id}")
async def update_monitor(
    monitor_id: Id, body: MonitorUpdate, request: Request, caller: MonitorWriter, st: StateDep
) -> dict[str, Any]:
    given = patch_fields(body, nullable={"alert_email", "max_runtime_sec", "schedule"})
    period = _period(
        caller, given.pop("interval_sec", None), given.pop("period_sec", None), required=False
    )
    if "tz" in given and given.get("schedule") is None:
        raise ApiError(422, "invalid", "tz goes with schedule (give both)", "tz")
    if given.get("schedule") is not None:
        if period is not None:
            raise ApiError(
                422, "invalid", "give schedule or intervalSec/periodSec, not both", "schedule"
            )
        parsed, period = _schedule_of(caller, given["schedule"], given.get("tz"))
        given["schedule"], given["tz"] = parsed.expression, parsed.tz
    elif "schedule" in given or period is not None:
        given["schedule"] = given["tz"] = None  # a period again (null: the one it showed)
    if period is not None:
        given["interval_sec"] = period
    channel_ids = given.pop("channel_ids", None)
    assignments = {_COLUMNS[k]: v for k, v in given.items()}
    return await _change(
        caller, st, request, monitor_id, "UPDATE_MONITOR", assignments, channel_ids
    )


@router.post("/monitors/{monitor_id}/pause")
async def pause_monitor(
    monitor_id: Id, request: Request, caller: CallerDep, st: StateDep
) -> dict[str, Any]:
    return await _change(caller, st, request, monitor_id, "PAUSE_MONITOR", {"paused": True})


@router.post("/monitors/{monitor_id}/resume")
async def resume_monitor(
    monitor_id: Id, request: Request, caller: CallerDep, st: StateDep
) -> dict[str, Any]:
    return await _change(caller, st, request, monitor_id, "RESUME_MONITOR", {"paused": False})


@router.post("/monitors/{monitor_id}/rotate-token")
async def rotate_token(
    monitor_id: Id, request: Request, caller: CallerDep, st: StateDep
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
    monitor_id: Id, request: Request, caller: CallerDep, st: StateDep
) -> Response:
    caller.require("monitors:write")
    xid = await delete_owned(st, caller, request, "monitors", monitor_id, NOT_FOUND)
    await applied.wait(st.pool, xid, st.settings.lease)  # its token answers 404 everywhere
    return Response(status_code=204)


# The same routes an incident takes (migration 0006), less the status-page subscribers.
_TARGETS = """
SELECT r.org_id, r.channel_id, r.channel_type, c.config, c.secret_envelope, r.address,
       r.channel_ref, c.name AS channel_name
FROM monitor_alert_routes r LEFT JOIN channels c ON c.id = r.channel_id
WHERE r.monitor_id = $1
ORDER BY r.channel_id NULLS LAST
"""


TOO_MANY_TESTS = ApiError(
    429,
    "too_many_test_alerts",
    f"at most {TEST_ALERTS_PER_MINUTE} test alerts a minute per"
    f" monitor, {TEST_ALERTS_PER_MINUTE * 10} per organisation; wait",
)


@router.post("/monitors/{monitor_id}/test-alert")
async def test_alert(
    monitor_id: Id, request: Request, caller: MonitorWriter, st: StateDep
) -> dict[str, Any]:
    """Send a test notification through every channel of the monitor now (no incident),
    and say per channel whether it landed, with the exact error when it did not."""
    async with st.pool.acquire() as conn:
        monitor = await conn.fetchrow(
            "SELECT id, name FROM monitors WHERE id = $1 AND org_id = $2", monitor_id, caller.org_id
        )
        if monitor is None:
            raise NOT_FOUND
        targets = await conn.fetch(_TARGETS, monitor_id)
    # Each test alert reaches every channel and address of the monitor: bounded, so the
    # button (or a script) cannot be made into a mail or chat cannon.
    limiter, per_monitor, per_org = st.test_alerts, f"monitor:{monitor_id}", f"org:{caller.org_id}"
    if limiter.exceeded(per_monitor) or limiter.exceeded(per_org, limiter.limit * 10):
        raise TOO_MANY_TESTS
    limiter.count(per_monitor)
    limiter.count(per_org)
    now = datetime.now(UTC)
    keys = [uuid.uuid4() for _ in targets]
    outcomes = await asyncio.gather(*(
        attempt(st.transport, st.keyring, Target.of(t), Notice(
            kind="test", monitor_id=monitor_id, monitor_name=monitor["name"], incident_id=None,
            opened_at=None, resolved_at=None, sent_at=now, idempotency_key=str(key),
        ))
        for t, key in zip(targets, keys, strict=True)
    ))  # fmt: skip
    done = datetime.now(UTC)
    async with st.pool.acquire() as conn, conn.transaction():
        await conn.executemany(
            "INSERT INTO notifications (org_id, monitor_id, channel_id, channel_type, address,"
            " channel_ref, kind, idempotency_key, status, attempts, next_attempt_at, last_error,"
            " created_at, delivered_at, finished_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, 'test', $7, $8, 1, $9, $10, $9, $11, $12)",
            [
                (caller.org_id, monitor_id, t["channel_id"], t["channel_type"], t["address"],
                 t["channel_ref"], key, "delivered" if err is None else "failed", now,
                 err.message if err else None, done if err is None else None, done)
                for t, key, err in zip(targets, keys, outcomes, strict=True)
            ],
        )  # fmt: skip
        await audit(conn, caller, request, "SEND_TEST_ALERT", "monitor", monitor_id)
    return {
        "results": [
            {
                "channelId": t["channel_id"],
                "type": t["channel_type"],
                # The channel's name; for the monitor's alertEmail, the address.
                "name": t["channel_name"] if t["channel_id"] is not None else t["address"],
                "ok": err is None,
                "error": err.message if err else None,
            }
            for t, err in zip(targets, outcomes, strict=True)
        ]
    }
