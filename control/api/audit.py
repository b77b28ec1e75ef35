"""GET /audit-log: owners and admins with audit:read, newest first, paginated."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from ..deps import MAX_ID, CallerDep, StateDep, page

router = APIRouter()


@router.get("/audit-log")
async def audit_log(
    caller: CallerDep,
    st: StateDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> dict[str, Any]:
    caller.require("audit:read")
    rows = await st.pool.fetch(
        "SELECT * FROM audit_log WHERE org_id = $1 AND ($2::bigint IS NULL OR id < $2)"
        " ORDER BY id DESC LIMIT $3",
        caller.org_id,
        before,
        limit + 1,
    )
    rows, next_before = page(rows, limit)
    return {
        "entries": [
            {
                "id": r["id"],
                "action": r["action"],
                "outcome": r["outcome"],
                "actor": {"userId": r["actor_user_id"], "tokenId": r["actor_token_id"]},
                "target": {"type": r["target_type"], "id": r["target_id"]},
                "ip": str(r["ip"]) if r["ip"] is not None else None,
                "userAgent": r["user_agent"],
                "createdAt": r["created_at"].isoformat(),
            }
            for r in rows
        ],
        "nextBefore": next_before,
    }
