"""GET /me, and the caller's personal access tokens."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from .. import access, pat, quotas
from ..deps import MAX_ID, CallerDep, Id, StateDep, TokenWriter, audit, page
from ..errors import ApiError
from ..models import TokenCreate

router = APIRouter()
QUOTA_LOCK = 0x746F6B6E  # with the user id: one token mint at a time per user


@router.get("/me")
async def me(caller: CallerDep) -> dict[str, Any]:
    return {
        "user": {"id": caller.user_id, "email": caller.email, "role": caller.role},
        "org": {"id": caller.org_id, "name": caller.org_name, "plan": caller.plan},
        "token": {"id": caller.token_id, "name": caller.token_name, "scopes": list(caller.scopes)},
    }


def _token_row(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "scopes": list(row["scopes"]),
        "hint": row["token_hint"],
        "createdAt": row["created_at"].isoformat(),
        "expiresAt": row["expires_at"].isoformat() if row["expires_at"] else None,
        "lastUsedAt": row["last_used_at"].isoformat() if row["last_used_at"] else None,
    }


@router.post("/me/tokens", status_code=201)
async def create_token(
    body: TokenCreate, request: Request, caller: TokenWriter, st: StateDep
) -> dict[str, Any]:
    unknown = access.unknown_scopes(body.scopes)
    if unknown:
        raise ApiError(422, "invalid", f"unknown scopes: {', '.join(unknown)}", "scopes")
    if body.expires_at is not None and (
        body.expires_at.tzinfo is None or body.expires_at <= datetime.now(UTC)
    ):
        raise ApiError(422, "invalid", "expiresAt must be a future time with a zone", "expiresAt")
    if not access.can_mint(caller.role, caller.scopes, body.scopes):
        raise ApiError(403, "forbidden", "a token cannot grant scopes its creator lacks", "scopes")
    token = pat.new_token()
    async with st.pool.acquire() as conn, conn.transaction():
        # One user's live tokens at once: serialised per user, so the quota holds.
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", QUOTA_LOCK, caller.user_id)
        live = await conn.fetchval(
            "SELECT count(*) FROM access_tokens WHERE user_id = $1 AND revoked_at IS NULL"
            " AND (expires_at IS NULL OR expires_at > now())",
            caller.user_id,
        )
        most = st.settings.max_tokens_per_user
        if live >= most:
            raise quotas.exceeded("tokens", most, "per user; revoke one first")
        row = await conn.fetchrow(
            "INSERT INTO access_tokens (org_id, user_id, name, scopes, token_hash, token_hint,"
            " expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
            caller.org_id, caller.user_id, body.name, sorted(set(body.scopes)),
            pat.token_hash(st.keyring.pat_key, token), pat.hint(token), body.expires_at,
        )  # fmt: skip
        await audit(conn, caller, request, "CREATE_TOKEN", "token", row["id"])
    return {**_token_row(row), "token": token}


@router.get("/me/tokens")
async def list_tokens(
    caller: CallerDep,
    st: StateDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> dict[str, Any]:
    rows = await st.pool.fetch(
        "SELECT * FROM access_tokens WHERE user_id = $1 AND revoked_at IS NULL AND id > $2"
        " ORDER BY id LIMIT $3",
        caller.user_id, after, limit + 1,
    )  # fmt: skip
    rows, next_after = page(rows, limit)
    return {"tokens": [_token_row(r) for r in rows], "nextAfter": next_after}


@router.delete("/me/tokens/{token_id}", status_code=204)
async def revoke_token(token_id: Id, request: Request, caller: CallerDep, st: StateDep) -> Response:
    caller.require("tokens:write")
    async with st.pool.acquire() as conn, conn.transaction():
        done = await conn.execute(
            "UPDATE access_tokens SET revoked_at = now()"
            " WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
            token_id,
            caller.user_id,
        )
        if done != "UPDATE 1":
            raise ApiError(404, "not_found", "no such token")
        await audit(conn, caller, request, "REVOKE_TOKEN", "token", token_id)
    return Response(status_code=204)
