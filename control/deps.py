"""What every request handler of the control process shares: the process's state, the
caller (a PAT, see auth.py), the client's address, the audit entry, ids, pages of rows,
PATCH bodies and the scope each writer needs. The routers (``control.api``) and the web
pages (``control.web``) import from here; only the composition root (``app.py``)
imports them.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Header, Path, Request
from pydantic import BaseModel

from core.proxies import normalise
from core.settings import Settings
from notifier.base import Transport
from notifier.base import iso as iso

from . import errors
from .auth import Caller, Limiter, authenticate
from .crypto import Keyring, LiveKeyring
from .models import MAX_ID as MAX_ID


@dataclass
class State:
    pool: asyncpg.Pool
    keys: LiveKeyring  # the keyring, as its file says now (`keys rotate` needs no restart)
    settings: Settings
    transport: Transport  # test alerts go out from the control process
    limiter: Limiter  # failed authentications
    test_alerts: Limiter  # per monitor and per organisation
    subscribers_by_address: Limiter  # status-page subscriptions per client address
    subscribers_by_email: Limiter  # and per address subscribed

    @property
    def keyring(self) -> Keyring:
        return self.keys.get()


TEST_ALERTS_PER_MINUTE = 5  # per monitor; an organisation gets ten times that
SUBSCRIBE_PER_EMAIL_PER_HOUR = 3


def state(request: Request) -> State:
    value: State = request.app.state.lastseen
    return value


def client_address(request: Request) -> str:
    """The client's IP address (the server has applied a trusted proxy's X-Forwarded-For);
    "unknown" when there is none or a proxy sent something that is not an address."""
    host = request.client.host if request.client else None
    return (normalise(host) if host else None) or "unknown"


async def caller(
    request: Request,
    st: Annotated[State, Depends(state)],
    authorization: Annotated[str | None, Header()] = None,
) -> Caller:
    return await authenticate(
        st.pool, st.keyring.pat_key, st.limiter, authorization, client_address(request)
    )


async def audit(
    conn: asyncpg.Connection,
    caller: Caller,
    request: Request,
    action: str,
    target_type: str,
    target_id: int | None,
    *,
    allowed: bool = True,
) -> None:
    """Append one audit entry (in the caller's transaction)."""
    address = client_address(request)
    await conn.execute(
        "INSERT INTO audit_log (org_id, action, outcome, actor_user_id, actor_token_id,"
        " target_type, target_id, ip, user_agent)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::inet, $9)",
        caller.org_id, action, "allowed" if allowed else "denied", caller.user_id,
        caller.token_id, target_type, target_id, None if address == "unknown" else address,
        request.headers.get("user-agent"),
    )  # fmt: skip


def page(rows: list[Any], limit: int) -> tuple[list[Any], int | None]:
    """Rows fetched with LIMIT limit + 1: the page, and the id to continue from (or None)."""
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1]["id"]
    return rows, None


CallerDep = Annotated[Caller, Depends(caller)]
# Object ids: anything beyond MAX_ID is refused (422) before a query.
Id = Annotated[int, Path(ge=1, le=MAX_ID)]


def patch_fields(body: BaseModel, nullable: Collection[str] = ()) -> dict[str, Any]:
    """The fields a PATCH body sets. Null only where `nullable` allows it (the schema says
    so, but pydantic lets an omitted-or-null field through): 422 otherwise."""
    given = body.model_dump(exclude_unset=True)
    for field, value in given.items():
        if value is None and field not in nullable:
            name = type(body).model_fields[field].alias or field  # as the API spells it
            raise errors.ApiError(422, "invalid", f"{name} cannot be null", name)
    return given


def needing(scope: str) -> Any:
    """A caller dependency that also requires `scope`: refused (403) before the body is
    validated, so a caller without the right learns nothing about the schema."""

    async def dependency(caller: CallerDep) -> Caller:
        caller.require(scope)
        return caller

    return Depends(dependency)


MonitorWriter = Annotated[Caller, needing("monitors:write")]
TokenWriter = Annotated[Caller, needing("tokens:write")]
ChannelWriter = Annotated[Caller, needing("channels:write")]
StatusPageWriter = Annotated[Caller, needing("status-pages:write")]
StateDep = Annotated[State, Depends(state)]


def found(row: Any, not_found: errors.ApiError) -> Any:
    """`row`, or `not_found` raised when the query found nothing (another organisation's
    object reads as missing)."""
    if row is None:
        raise not_found
    return row


_OWNED = {"monitors": "monitor", "channels": "channel", "status_pages": "status_page"}


async def delete_owned(
    st: State, caller: Caller, request: Request, table: str, object_id: int,
    not_found: errors.ApiError,
) -> str:  # fmt: skip
    """Delete one of the caller's organisation's objects and audit it (DELETE_<TYPE>), or
    raise `not_found` (another organisation's object reads as missing). Returns the
    deleting transaction's id (``control/applied.py``)."""
    kind = _OWNED[table]
    async with st.pool.acquire() as conn, conn.transaction():
        done = await conn.execute(
            f"DELETE FROM {table} WHERE id = $1 AND org_id = $2", object_id, caller.org_id
        )
        if done != "DELETE 1":
            raise not_found
        await audit(conn, caller, request, f"DELETE_{kind.upper()}", kind, object_id)
        xid: str = await conn.fetchval("SELECT pg_current_xact_id()::text")
    return xid
