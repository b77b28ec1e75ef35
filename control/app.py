"""The control process's composition root: the FastAPI app, its state, and its routers.

The API (``control.api``, mounted under /api/v1) takes the caller from
``deps.caller()`` (a PAT, see auth.py) on every route and scopes each query to the
caller's organisation, so another organisation's object reads exactly like a missing
one. The public status pages and the dashboard are ``control.web``. This module imports
them; nothing imports it but the command line.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from core.dbrole import create_app_pool
from notifier.base import Settings, Transport

from . import errors
from .api import audit, channels, incidents, me, monitors, status_pages
from .auth import MAX_FAILURES, Limiter
from .crypto import Keyring
from .deps import TEST_ALERTS_PER_MINUTE, State
from .web import dashboard, status


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
    for module in (me, monitors, channels, incidents, status_pages, audit):
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
