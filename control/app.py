"""The control plane's ASGI app: FastAPI on asyncpg, mounted under /api/v1.

Every route takes the caller from ``caller()`` (a PAT, see auth.py) and scopes each query
to the caller's organisation, so another organisation's object reads exactly like a
missing one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, FastAPI, Header, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from core.dbrole import create_app_pool
from core.proxies import normalise
from notifier.base import Settings, Transport

from . import errors
from .auth import MAX_FAILURES, Caller, Limiter, authenticate
from .crypto import Keyring
from .models import MAX_ID as MAX_ID


@dataclass
class State:
    pool: asyncpg.Pool
    keyring: Keyring
    limiter: Limiter
    transport: Transport  # test alerts go out from the control process
    test_alerts: Limiter  # per monitor and per organisation


TEST_ALERTS_PER_MINUTE = 5  # per monitor; an organisation gets ten times that


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


def iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


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
            raise errors.ApiError(422, "invalid", f"{field} cannot be null", field)
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


def create_app(
    dsn: str,
    keyring: Keyring,
    *,
    failure_limit: int = MAX_FAILURES,
    settings: Settings | None = None,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_app_pool(dsn, min_size=1, max_size=10, command_timeout=10)
        transport = Transport(settings or Settings.from_env())
        app.state.lastseen = State(
            pool, keyring, Limiter(failure_limit), transport,
            Limiter(TEST_ALERTS_PER_MINUTE, 60.0),
        )  # fmt: skip
        try:
            yield
        finally:
            await transport.aclose()
            await pool.close()

    app = FastAPI(
        title="lastseen",
        version="1",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    errors.install(app)
    from . import api_audit, api_channels, api_incidents, api_me, api_monitors, dashboard, status
    from . import api_status_pages as api_pages

    for module in (api_me, api_monitors, api_channels, api_incidents, api_pages, api_audit):
        app.include_router(module.router, prefix="/api/v1", responses=errors.RESPONSES)
    app.include_router(status.router, include_in_schema=False)

    @app.get("/healthz", include_in_schema=False)
    async def healthz(request: Request) -> JSONResponse:
        """200 when the control process can reach its database, else 503 saying so."""
        try:
            async with asyncio.timeout(2):
                await request.app.state.lastseen.pool.fetchval("SELECT 1")
        except (*errors.DATABASE_DOWN, asyncpg.PostgresError):
            return JSONResponse({"status": "down", "down": ["database"]}, status_code=503)
        return JSONResponse({"status": "ok", "down": []})

    app.include_router(dashboard.router, include_in_schema=False)
    return app
