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
from fastapi.responses import JSONResponse, RedirectResponse, Response

from core.dbrole import create_app_pool
from core.settings import Settings
from notifier.base import Transport

from . import errors
from .api import audit, channels, incidents, me, monitors, pings, status_pages
from .auth import Limiter
from .crypto import Keyring, LiveKeyring, live_keyring
from .delivery import channel_settings
from .deps import SUBSCRIBE_PER_EMAIL_PER_HOUR, TEST_ALERTS_PER_MINUTE, State
from .web import dashboard, status


def create_app(
    dsn: str, keyring: Keyring | LiveKeyring, settings: Settings | None = None
) -> FastAPI:
    """The control process's app; `settings` default to the environment's; `keyring`
    reloads from its file as it changes if it is a LiveKeyring."""
    config = settings or Settings.from_env()
    keys = live_keyring(keyring)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_app_pool(
            dsn, min_size=1, max_size=10, command_timeout=config.control_db_timeout
        )
        transport = Transport(channel_settings(config))
        app.state.lastseen = State(
            pool, keys, config, transport,
            limiter=Limiter(config.auth_failures_per_hour),
            test_alerts=Limiter(TEST_ALERTS_PER_MINUTE, 60.0),
            subscribers_by_address=Limiter(config.subscribe_per_ip_per_hour),
            subscribers_by_email=Limiter(SUBSCRIBE_PER_EMAIL_PER_HOUR),
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
    for module in (me, monitors, pings, channels, incidents, status_pages, audit):
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

    @app.get("/", include_in_schema=False)
    async def root(request: Request) -> Response:
        """A browser goes to the dashboard; anything else learns where things are."""
        if errors.wants_html(request):
            return RedirectResponse("/dashboard", status_code=303)
        return JSONResponse(
            {"name": "lastseen", "api": "/api/v1", "openapi": "/api/v1/openapi.json",
             "dashboard": "/dashboard"}
        )  # fmt: skip

    app.include_router(dashboard.router, include_in_schema=False)
    return app
