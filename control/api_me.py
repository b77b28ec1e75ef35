"""GET /me, and the caller's personal access tokens."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Response

from . import access, pat
from .app import CallerDep, Id, StateDep, TokenWriter
from .errors import ApiError
from .models import TokenCreate

router = APIRouter()


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
async def create_token(body: TokenCreate, caller: TokenWriter, st: StateDep) -> dict[str, Any]:
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
    row = await st.pool.fetchrow(
        "INSERT INTO access_tokens (org_id, user_id, name, scopes, token_hash, token_hint,"
        " expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
        caller.org_id,
        caller.user_id,
        body.name,
        sorted(set(body.scopes)),
        pat.token_hash(st.keyring.pat_key, token),
        pat.hint(token),
        body.expires_at,
    )
    return {**_token_row(row), "token": token}


@router.get("/me/tokens")
async def list_tokens(caller: CallerDep, st: StateDep) -> dict[str, Any]:
    rows = await st.pool.fetch(
        "SELECT * FROM access_tokens WHERE user_id = $1 AND revoked_at IS NULL ORDER BY id",
        caller.user_id,
    )
    return {"tokens": [_token_row(r) for r in rows]}


@router.delete("/me/tokens/{token_id}", status_code=204)
async def revoke_token(token_id: Id, caller: CallerDep, st: StateDep) -> Response:
    caller.require("tokens:write")
    done = await st.pool.execute(
        "UPDATE access_tokens SET revoked_at = now()"
        " WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
        token_id,
        caller.user_id,
    )
    if done != "UPDATE 1":
        raise ApiError(404, "not_found", "no such token")
    return Response(status_code=204)
