"""The one error shape of the API: {"error": {"code", "message", "field"}}."""

from __future__ import annotations

import html
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic.alias_generators import to_camel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import problems

log = logging.getLogger(__name__)
# What a lost or unreachable database raises: the API answers 503, not 500.
DATABASE_DOWN = problems.DATABASE_DOWN
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


error_body = problems.error_body


class CatchAll:
    """ASGI middleware: an exception no handler took becomes the JSON 500, logged here by
    type only. (Starlette's handler for Exception answers, then re-raises to the server,
    which logs the whole traceback, SQL parameters and all.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception as exc:
            unavailable = isinstance(exc, DATABASE_DOWN)
            log.error("%s: %s", "database unavailable" if unavailable else "internal error",
                      type(exc).__name__)  # fmt: skip
            if started:
                return  # the answer is on its way: the connection ends short
            if unavailable:
                body = error_body("database_unavailable", "the database is unavailable; retry")
                response = JSONResponse(body, status_code=503, headers={"retry-after": "5"})
            else:
                response = JSONResponse(error_body("internal", "internal error"), status_code=500)
            await response(scope, receive, send)


def install(app: FastAPI) -> None:
    app.add_middleware(CatchAll)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        if exc.status == 404 and wants_html(request):  # a missing status page, in a browser
            return not_found_page(exc.message)
        return JSONResponse(error_body(exc.code, exc.message, exc.field), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        # Union members name themselves in the location ("constrained-str", "literal[..]"):
        # only field names and list indexes make the field's path.
        loc = [
            str(p) for p in first.get("loc", ())
            if p not in ("body", "query", "path") and (isinstance(p, int) or _NAME.fullmatch(p))
        ]  # fmt: skip
        field = ".".join(loc) or None
        kind = first.get("type", "")
        where = first.get("loc", ("",))[0]
        if where in ("path", "query") and field is not None:
            field = to_camel(field)  # page_id -> pageId: as the API spells names
        if where == "path" and field is not None and kind == "int_parsing":
            given = first.get("input")
            message = (
                f"{field} is a number, the id the API returned (not {given!r}: a status page"
                " is found by its slug in GET /status-pages)"
                if field == "pageId"
                else f"{field} is a number, the id the API returned (not {given!r})"
            )
        elif kind == "extra_forbidden":
            message = f"unknown field {field!r}"
        elif kind == "missing":
            message = f"{field} is required"
        elif kind == "literal_error":
            message = f"{field} must be one of {first.get('ctx', {}).get('expected', '?')}"
        else:
            message = f"{field}: {first.get('msg', 'invalid value')}"
        return JSONResponse(error_body("invalid", message, field), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404 and wants_html(request):
            return not_found_page("there is no page at this address")
        codes = {400: "invalid", 404: "not_found", 405: "method_not_allowed"}
        headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() != "allow"}
        if exc.status_code == 405:  # every method of the path, not just one route's
            allowed = {
                method
                for route in request.app.router.routes
                if isinstance(route, APIRoute) and route.path_regex.match(request.url.path)
                for method in route.methods or ()
            }
            headers["allow"] = ", ".join(sorted(allowed))
        return JSONResponse(
            error_body(codes.get(exc.status_code, "error"), str(exc.detail)),
            status_code=exc.status_code,
            headers=headers,
        )


def wants_html(request: Request) -> bool:
    """A browser asking for a page (not the API, whose answers are JSON for everyone)."""
    return (
        request.method in ("GET", "HEAD")
        and not request.url.path.startswith("/api/")
        and "text/html" in request.headers.get("accept", "")
    )


def not_found_page(message: str) -> HTMLResponse:
    """A 404 a person can read, with the ways on."""
    text = html.escape(message[:1].upper() + message[1:])
    body = (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        "<title>Not found · lastseen</title>"
        "<body style='font-family: system-ui, sans-serif; max-width: 40rem; margin: 4rem auto;"
        " padding: 0 1rem'>"
        f"<h1>Not found</h1><p>{text}.</p>"
        "<p><a href='/dashboard'>The dashboard</a> · "
        "<a href='/api/v1/openapi.json'>The API (OpenAPI)</a></p></body></html>"
    )
    return HTMLResponse(body, status_code=404)


ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "field"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": ["string", "null"]},
            },
        }
    },
}
_ERROR = {"content": {"application/json": {"schema": ERROR_SCHEMA}}}
# What any /api/v1 route may answer besides its success, documented once.
RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"description": why, **_ERROR}
    for code, why in [
        (400, "the body is not JSON"),
        (401, "missing, malformed, unknown, expired or revoked token"),
        (403, "the role or the token's scopes do not allow it"),
        (404, "no such object in the caller's organisation"),
        (409, "conflicts with an existing object"),
        (422, "invalid input; field names it"),
        (429, "too many failed authentications from this address"),
    ]
}
