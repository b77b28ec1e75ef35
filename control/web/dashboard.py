"""The admin dashboard at /dashboard: server-rendered pages over the same API.

Signing in takes a PAT and keeps it, sealed under the keyring with a session id, in an
HttpOnly, SameSite=Strict session cookie (Secure when the page is served over HTTPS). The
session is a row in ``dashboard_sessions``: signing out ends it (the old cookie no longer
works), and it ends by itself after SESSION_HOURS whatever the token's lifetime. A
message after an action travels in a short-lived flash cookie set by the redirect, never
in the URL, so a link cannot put words in the dashboard's mouth. Every action
is a request to ``/api/v1`` made in-process with the caller's PAT and address (an ASGI
call, not a shortcut into the database), so the dashboard can never do more than the API
allows the token, and every audit entry names the real client. Every POST carries a CSRF
token: a random value in a SameSite=Strict cookie that the form or script must repeat.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
import uuid
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from notifier.base import duration
from notifier.channels import TYPES

from ..access import effective
from ..crypto import SESSION_PURPOSE, EnvelopeError, open_envelope, seal
from ..deps import StateDep, client_address
from ..models import INTERVALS
from .status import bar_class, templates

router = APIRouter(prefix="/dashboard")
SESSION = "lastseen_session"
CSRF = "lastseen_csrf"
FLASH = "lastseen_flash"
SESSION_HOURS = 12


class SignedIn:
    """The signed-in caller, as the API describes them (GET /me)."""

    def __init__(self, request: Request, pat: str, me: dict[str, Any]) -> None:
        self.request = request
        self.pat = pat
        self.me = me
        self.scopes = effective(me["user"]["role"], me["token"]["scopes"])

    def can(self, scope: str) -> bool:
        return scope in self.scopes

    async def api(self, method: str, path: str, json: Any = None) -> httpx.Response:
        return await call_api(self.request, self.pat, method, path, json)


async def call_api(
    request: Request, pat: str, method: str, path: str, json: Any = None
) -> httpx.Response:
    """One /api/v1 request through the app itself, as the signed-in caller."""
    transport = httpx.ASGITransport(app=request.app, client=(client_address(request), 0))
    async with httpx.AsyncClient(transport=transport, base_url=str(request.base_url)) as client:
        return await client.request(
            method, "/api/v1" + path, json=json,
            headers={"authorization": f"Bearer {pat}",
                     "user-agent": request.headers.get("user-agent", "")},
        )  # fmt: skip


def _seal_session(st: Any, pat: str, sid: uuid.UUID) -> str:
    plain = json.dumps({"pat": pat, "sid": str(sid)}).encode()
    envelope = seal(st.keyring, plain, purpose=SESSION_PURPOSE, org_id=0, object_id=0)
    return base64.urlsafe_b64encode(envelope.encode()).decode().rstrip("=")


def _open_session(st: Any, cookie: str) -> tuple[str, uuid.UUID] | None:
    """(token, session id) from a session cookie, or None (forged, or from before
    sessions had ids)."""
    try:
        envelope = base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4)).decode()
        plain = open_envelope(st.keyring, envelope, purpose=SESSION_PURPOSE, org_id=0, object_id=0)
        value = json.loads(plain)
        return str(value["pat"]), uuid.UUID(str(value["sid"]))
    except (EnvelopeError, ValueError, binascii.Error, UnicodeDecodeError, KeyError, TypeError):
        return None


async def signed_in(request: Request, st: Any) -> SignedIn | None:
    cookie = request.cookies.get(SESSION)
    opened = _open_session(st, cookie) if cookie else None
    if opened is None:
        return None
    pat, sid = opened
    live = await st.pool.fetchval(
        "SELECT true FROM dashboard_sessions"
        " WHERE id = $1 AND ended_at IS NULL AND expires_at > now()",
        sid,
    )
    if not live:
        return None
    me = await call_api(request, pat, "GET", "/me")
    return SignedIn(request, pat, me.json()) if me.status_code == 200 else None


def _flash(request: Request) -> tuple[str, str]:
    """(message, error) that the last redirect left for this page."""
    raw = request.cookies.get(FLASH)
    if not raw:
        return "", ""
    try:
        value = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        return str(value.get("msg", "")), str(value.get("error", ""))
    except (ValueError, binascii.Error, AttributeError):
        return "", ""


def _csrf(request: Request) -> str:
    return request.cookies.get(CSRF) or secrets.token_urlsafe(32)


def _csrf_ok(request: Request, sent: str) -> bool:
    cookie = request.cookies.get(CSRF, "")
    return bool(cookie) and hmac.compare_digest(cookie.encode(), sent.encode())


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    token = _csrf(request)
    response = templates.TemplateResponse(
        request, name, {"csrf": token, **context}, status_code=status
    )
    response.set_cookie(CSRF, token, httponly=True, samesite="strict", secure=_secure(request),
                        path="/dashboard")  # fmt: skip
    if FLASH in request.cookies:
        response.delete_cookie(FLASH, path="/dashboard")  # shown once
    response.headers["cache-control"] = "no-store"
    response.headers["x-frame-options"] = "DENY"
    response.headers["content-security-policy"] = (
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline';"
        " frame-ancestors 'none'"
    )
    return response


def back(path: str, *, message: str = "", error: str = "") -> RedirectResponse:
    response = RedirectResponse(f"/dashboard{path}", status_code=303)
    if message or error:
        value = json.dumps({"msg": message, "error": error}).encode()
        response.set_cookie(FLASH, base64.urlsafe_b64encode(value).decode().rstrip("="),
                            max_age=60, httponly=True, samesite="strict",
                            path="/dashboard")  # fmt: skip
    return response


def error_of(response: httpx.Response) -> str:
    try:
        detail = response.json()["error"]
        return f"{detail['message']} ({response.status_code})"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


def refused(request: Request) -> Response:
    text = "The form expired or did not come from this dashboard. Reload and retry."
    return render(request, "message.html", 403, slug="", heading="Refused", text=text)


# -- pages ------------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
async def overview_page(request: Request, st: StateDep) -> Response:
    msg, error = _flash(request)
    return await overview(request, st, msg=msg, error=error)


async def overview(request: Request, st: Any, *, msg: str = "", error: str = "") -> Response:
    me = await signed_in(request, st)
    if me is None:
        return render(request, "signin.html", error=error)
    monitors = (await me.api("GET", "/monitors?limit=500")).json().get("monitors", [])
    channels = incidents = []
    if me.can("channels:read"):
        channels = (await me.api("GET", "/channels?limit=500")).json().get("channels", [])
    if me.can("incidents:read"):
        incidents = (await me.api("GET", "/incidents?limit=20")).json().get("incidents", [])
    return render(request, "dashboard.html", me=me, monitors=monitors, channels=channels,
                  incidents=incidents, intervals=INTERVALS, types=TYPES, msg=msg,
                  error=error, human=duration, zones=ZONES)  # fmt: skip


@router.get("/api/monitors")
async def live_monitors(request: Request, st: StateDep) -> Response:
    """The monitors list for the page's live refresh."""
    me = await signed_in(request, st)
    if me is None:
        return JSONResponse({"error": "signed out"}, status_code=401)
    response = await me.api("GET", "/monitors?limit=500")
    return JSONResponse(response.json(), status_code=response.status_code)


@router.get("/monitors/{monitor_id}", response_class=HTMLResponse)
async def monitor_page(monitor_id: int, request: Request, st: StateDep) -> Response:
    me = await signed_in(request, st)
    if me is None:
        return back("")
    msg, error = _flash(request)
    return await monitor_view(me, monitor_id, msg=msg, error=error)


@router.get("/incidents/{incident_id}", response_class=HTMLResponse)
async def incident_page(incident_id: int, request: Request, st: StateDep) -> Response:
    """An incident, and each channel's delivery of it."""
    me = await signed_in(request, st)
    if me is None:
        return back("")
    got = await me.api("GET", f"/incidents/{incident_id}")
    if got.status_code != 200:
        return render(request, "message.html", got.status_code, slug="", heading="Not found",
                      text=error_of(got))  # fmt: skip
    return render(request, "incident.html", me=me, i=got.json(), when=_when)


def _when(iso: str | None) -> str:
    return iso[:19].replace("T", " ") + " UTC" if iso else "—"


async def monitor_view(me: SignedIn, monitor_id: int, **extra: Any) -> Response:
    got = await me.api("GET", f"/monitors/{monitor_id}")
    if got.status_code != 200:
        return render(me.request, "message.html", got.status_code, slug="", heading="Not found",
                      text=error_of(got))  # fmt: skip
    events = (await me.api("GET", f"/monitors/{monitor_id}/events?limit=50")).json()
    day = (await me.api("GET", f"/monitors/{monitor_id}/uptime?period=hour")).json()
    quarter = (await me.api("GET", f"/monitors/{monitor_id}/uptime?period=day")).json()
    pings = None  # None: not allowed to read them (job output), as opposed to none yet
    if me.can("pings:read"):
        pings = (await me.api("GET", f"/monitors/{monitor_id}/pings?limit=50")).json()["pings"]
    channels = []
    if me.can("channels:read"):
        channels = (await me.api("GET", "/channels?limit=500")).json().get("channels", [])
    context = {"msg": "", "error": "", "reveal": None, "results": None, "created": False,
               **extra}  # fmt: skip
    return render(me.request, "monitor.html", me=me, m=got.json(), events=events.get("events", []),
                  pings=pings, day=day, quarter=quarter, bar_class=bar_class, channels=channels,
                  intervals=INTERVALS, human=duration, cron=cron_line, **context)  # fmt: skip


_CRON = {60: "* * * * *", 120: "*/2 * * * *", 300: "*/5 * * * *", 600: "*/10 * * * *",
         900: "*/15 * * * *", 1800: "*/30 * * * *", 3600: "0 * * * *",
         86_400: "0 3 * * *", 604_800: "0 3 * * 1"}  # fmt: skip


def cron_line(seconds: int) -> str:
    """A crontab schedule for a period, where one says it (else a placeholder to fill)."""
    return _CRON.get(seconds, "m h dom mon dow")


# -- actions ----------------------------------------------------------------------------

Field = Annotated[str, Form()]


@router.post("/sign-in")
async def sign_in(request: Request, st: StateDep, token: Field = "", csrf: Field = "") -> Response:
    if not _csrf_ok(request, csrf):
        return refused(request)
    me = await call_api(request, token.strip(), "GET", "/me")
    if me.status_code != 200:
        return back("", error=error_of(me))
    sid = uuid.uuid4()
    await st.pool.execute(
        "WITH gone AS (DELETE FROM dashboard_sessions WHERE expires_at < now() - interval '1 day')"
        " INSERT INTO dashboard_sessions (id, expires_at)"
        " VALUES ($1, now() + make_interval(hours => $2))",
        sid, SESSION_HOURS,
    )  # fmt: skip
    response = back("")
    response.set_cookie(SESSION, _seal_session(st, token.strip(), sid), httponly=True,
                        samesite="strict", secure=_secure(request), path="/dashboard",
                        max_age=SESSION_HOURS * 3600)  # fmt: skip
    return response


@router.post("/sign-out")
async def sign_out(request: Request, st: StateDep, csrf: Field = "") -> Response:
    if not _csrf_ok(request, csrf):
        return refused(request)
    cookie = request.cookies.get(SESSION)
    opened = _open_session(st, cookie) if cookie else None
    if opened is not None:
        await st.pool.execute(
            "UPDATE dashboard_sessions SET ended_at = now() WHERE id = $1 AND ended_at IS NULL",
            opened[1],
        )
    response = back("", message="Signed out.")
    response.delete_cookie(SESSION, path="/dashboard")
    return response


def _int(value: str) -> int | str:
    try:
        return int(value)
    except ValueError:
        return value  # the API names the field and what it wants


# Suggested in the time zone field (any IANA name is taken).
ZONES = ("UTC", "Europe/London", "Europe/Berlin", "Europe/Paris", "America/New_York",
         "America/Chicago", "America/Los_Angeles", "America/Sao_Paulo", "Asia/Kolkata",
         "Asia/Tokyo", "Asia/Singapore", "Australia/Sydney")  # fmt: skip


def _timing(interval: str, schedule: str, tz: str, max_runtime: str) -> dict[str, Any]:
    """A form's timing fields as the API takes them: a schedule (with its zone) replaces
    the interval; an empty run time means none."""
    timing: dict[str, Any] = {"maxRuntimeSec": _int(max_runtime) if max_runtime.strip() else None}
    if schedule.strip():
        timing.update(schedule=schedule.strip(), tz=tz.strip() or "UTC")
    elif (period := _int(interval)) in INTERVALS or not isinstance(period, int):
        timing["intervalSec"] = period
    else:  # a period beyond the list (a daily job), as the monitor has it: kept
        timing["periodSec"] = period
    return timing


@router.post("/monitors")
async def create_monitor(
    request: Request, st: StateDep, csrf: Field = "", name: Field = "", intervalSec: Field = "",
    heartbeatGraceSec: Field = "60", alertThreshold: Field = "1", alertEmail: Field = "",
    schedule: Field = "", tz: Field = "", maxRuntimeSec: Field = "",
) -> Response:  # fmt: skip
    me = await signed_in(request, st)
    if me is None or not _csrf_ok(request, csrf):
        return refused(request)
    body = {"name": name, "url": f"internal://{name}", "type": "heartbeat",
            "heartbeatGraceSec": _int(heartbeatGraceSec),
            "alertThreshold": _int(alertThreshold), "alertEmail": alertEmail or None,
            **_timing(intervalSec, schedule, tz, maxRuntimeSec)}  # fmt: skip
    created = await me.api("POST", "/monitors", body)
    if created.status_code != 201:
        return back("", error=error_of(created))
    monitor_id = created.json()["id"]
    if me.can("secrets:read"):
        # Its ping URL at once, rendered in this response (a secret never goes in a URL);
        # the page then takes the monitor's own address.
        secrets = await me.api("GET", f"/monitors/{monitor_id}/secrets")
        if secrets.status_code == 200:
            return await monitor_view(
                me, monitor_id, msg="Monitor created.", reveal=secrets.json(), created=True
            )
    return back(f"/monitors/{monitor_id}", message="Monitor created.")


@router.post("/monitors/{monitor_id}/edit")
async def edit_monitor(monitor_id: int, request: Request, st: StateDep) -> Response:
    me = await signed_in(request, st)
    form = await request.form()
    if me is None or not _csrf_ok(request, str(form.get("csrf", ""))):
        return refused(request)
    body: dict[str, Any] = {
        "name": str(form.get("name", "")),
        "heartbeatGraceSec": _int(str(form.get("heartbeatGraceSec", ""))),
        "alertThreshold": _int(str(form.get("alertThreshold", ""))),
        "alertEmail": str(form.get("alertEmail", "")) or None,
        **_timing(*(str(form.get(k, "")) for k in ("intervalSec", "schedule", "tz",
                                                    "maxRuntimeSec"))),
    }  # fmt: skip
    if "channels-shown" in form:
        body["channelIds"] = [_int(str(v)) for v in form.getlist("channelIds")]
    done = await me.api("PATCH", f"/monitors/{monitor_id}", body)
    if done.status_code != 200:
        return back(f"/monitors/{monitor_id}", error=error_of(done))
    return back(f"/monitors/{monitor_id}", message="Saved.")


@router.post("/monitors/{monitor_id}/{action}")
async def monitor_action(
    monitor_id: int, action: str, request: Request, st: StateDep, csrf: Field = ""
) -> Response:
    me = await signed_in(request, st)
    if me is None or not _csrf_ok(request, csrf):
        return refused(request)
    if action == "delete":
        done = await me.api("DELETE", f"/monitors/{monitor_id}")
        if done.status_code != 204:
            return back(f"/monitors/{monitor_id}", error=error_of(done))
        return back("", message="Monitor deleted.")
    if action in ("pause", "resume"):
        done = await me.api("POST", f"/monitors/{monitor_id}/{action}")
        if done.status_code != 200:
            return back(f"/monitors/{monitor_id}", error=error_of(done))
        return back(f"/monitors/{monitor_id}", message=f"Monitor {action}d.")
    if action in ("reveal", "test-alert"):
        path = "/secrets" if action == "reveal" else "/test-alert"
        done = await me.api(
            "GET" if action == "reveal" else "POST", f"/monitors/{monitor_id}{path}"
        )
        if request.headers.get("accept", "").startswith("application/json"):
            return JSONResponse(done.json(), status_code=done.status_code)
        if done.status_code != 200:
            return back(f"/monitors/{monitor_id}", error=error_of(done))
        # Rendered in this response (never a redirect: a secret must not reach a URL).
        key = "reveal" if action == "reveal" else "results"
        return await monitor_view(me, monitor_id, **{key: done.json()})
    return render(request, "message.html", 404, slug="", heading="Not found", text="no such action")


@router.post("/channels")
async def create_channel(
    request: Request, st: StateDep, csrf: Field = "", type: Field = "", name: Field = "",
    url: Field = "", to: Field = "", botToken: Field = "", chatId: Field = "",
) -> Response:  # fmt: skip
    me = await signed_in(request, st)
    if me is None or not _csrf_ok(request, csrf):
        return refused(request)
    config: dict[str, Any] = (
        {"to": to} if type == "email"
        else {"botToken": botToken, "chatId": chatId} if type == "telegram"
        else {"url": url}
    )  # fmt: skip
    created = await me.api("POST", "/channels", {"type": type, "name": name, "config": config})
    if created.status_code != 201:
        return back("", error=error_of(created))
    shown = created.json()
    said = f"Channel {shown['name']} created."
    for warning in shown.get("warnings", []):  # e.g. a private address: blocked at alerts
        said += f" Warning: {warning['message']}."
    if "signingSecret" in shown:  # shown once, in this response (never in a URL)
        text = f"{said} Its signing secret (shown once): "
        return await overview(request, st, msg=text + shown["signingSecret"])
    return back("", message=said)
