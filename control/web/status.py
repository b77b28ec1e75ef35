"""Public status pages: HTML (Jinja2, no JavaScript needed) and the same data as JSON,
and the subscribe / confirm / unsubscribe flow for their email subscribers.

A private or missing page answers 404 to the public. Availability is the share of each UTC
day a monitor spent in an open incident, over the last 90 days (``control/uptime.py``:
days before its first ping have no data).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates

from notifier.schema import AddressError
from notifier.schema import address as email_address

from .. import subscribers, uptime
from ..auth import address_key
from ..deps import StateDep, client_address, iso
from ..errors import ApiError
from ..models import MAX_ID, SLUG

router = APIRouter()
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
DAYS = 90
RESOLVED_DAYS = 30
NOT_FOUND = ApiError(404, "not_found", "no such status page")
SLUG_SHAPE = re.compile(SLUG)
STATES = {
    "up": "Operational", "down": "Down", "pending": "No data yet", "paused": "Paused",
    # Missed while lastseen could not see pings (ingest/sight.py): neither green nor red.
    "unknown": "Unknown",
}  # fmt: skip
# Subscribe form: per client address, and per email address, in an hour.


def bar_class(share: float | None) -> str:
    if share is None:
        return "none"
    if share == 0:
        return "up"
    if share < 0.01:
        return "minor"
    if share < 0.1:
        return "partial"
    return "major"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def known_shape(slug: str) -> str:
    """The slug, if it could name a page at all; NOT_FOUND before any query otherwise (a
    NUL or a lone surrogate would make the database refuse the query: a 500)."""
    if not SLUG_SHAPE.fullmatch(slug):
        raise NOT_FOUND
    return slug


async def page_data(conn: Any, slug: str, now: datetime) -> dict[str, Any]:
    """Everything a status page shows; raises NOT_FOUND for a missing or private page."""
    known_shape(slug)
    page = await conn.fetchrow("SELECT * FROM status_pages WHERE slug = $1 AND public", slug)
    if page is None:
        raise NOT_FOUND
    monitors = await conn.fetch(
        "SELECT m.id, coalesce(spm.display_name, m.name) AS name, m.paused, m.created_at,"
        " coalesce(s.state, 'pending') AS state"
        " FROM status_page_monitors spm JOIN monitors m ON m.id = spm.monitor_id"
        " LEFT JOIN monitor_state s ON s.monitor_id = m.id"
        " WHERE spm.page_id = $1 ORDER BY spm.position",
        page["id"],
    )
    ids = [m["id"] for m in monitors]
    timelines = await uptime.periods(conn, monitors, now, timedelta(days=1), DAYS)
    incidents = await conn.fetch(
        "SELECT id, monitor_id, opened_at, resolved_at FROM incidents"
        " WHERE monitor_id = ANY($1::bigint[]) AND (resolved_at IS NULL OR resolved_at > $2)"
        " ORDER BY opened_at DESC",
        ids, now - timedelta(days=RESOLVED_DAYS),
    )  # fmt: skip
    shown = []
    for m in monitors:
        periods, availability = timelines[m["id"]]
        days = [
            {**{k: p[k] for k in ("downSeconds", "observedSeconds", "share")},
             "date": p["start"].date().isoformat()}
            for p in periods
        ]  # fmt: skip
        mine = [i for i in incidents if i["monitor_id"] == m["id"]]
        state = "paused" if m["paused"] else m["state"]
        shown.append({
            "id": m["id"], "name": m["name"], "state": state, "stateLabel": STATES[state],
            "availability": availability,
            "days": days,
            "openIncidents": [{"id": i["id"], "openedAt": iso(i["opened_at"])}
                              for i in mine if i["resolved_at"] is None],
            "resolvedIncidents": [
                {"id": i["id"], "openedAt": iso(i["opened_at"]),
                 "resolvedAt": iso(i["resolved_at"]),
                 "durationSeconds": round((i["resolved_at"] - i["opened_at"]).total_seconds())}
                for i in mine if i["resolved_at"] is not None
            ],
        })  # fmt: skip
    states = {m["state"] for m in shown}
    overall = "down" if "down" in states else "unknown" if "unknown" in states else "up"
    return {
        "slug": page["slug"], "title": page["title"], "overall": overall,
        "generatedAt": iso(now), "monitors": shown,
    }  # fmt: skip


# What changes a page without the clock moving: its title, its monitors (names, order,
# states) and their incidents. A cached page is served while this is unchanged and it
# is younger than CACHE_SECONDS (its time-dependent figures, today's share of an ongoing
# incident, are then at most that old).
_FINGERPRINT = """
SELECT md5(concat_ws('|', p.title, p.updated_at,
    (SELECT string_agg(concat_ws(',', spm.monitor_id, spm.position, m.name, spm.display_name,
                                 m.paused, s.state, s.state_changed_at), ';'
                       ORDER BY spm.position)
     FROM status_page_monitors spm JOIN monitors m ON m.id = spm.monitor_id
     LEFT JOIN monitor_state s ON s.monitor_id = m.id WHERE spm.page_id = p.id),
    (SELECT concat_ws(',', max(i.id), count(i.resolved_at), max(i.resolved_at))
     FROM status_page_monitors spm JOIN incidents i ON i.monitor_id = spm.monitor_id
     WHERE spm.page_id = p.id)))
FROM status_pages p WHERE p.slug = $1 AND p.public
"""
CACHE_SECONDS = 10.0
CACHE_PAGES = 256
RENDERS_AT_ONCE = 2  # anonymous page renders in progress at once, all pages together


@dataclass
class _Rendered:
    fingerprint: str
    at: float
    data: dict[str, Any]
    html: str | None = None


class PageCache:
    """Rendered status pages, briefly: a public page costs one small query per request,
    and a full render only when it changed or every CACHE_SECONDS. Concurrent requests
    for one page wait for the same render, and at most RENDERS_AT_ONCE renders run at
    once, so a crowd (or an attacker) cannot make the control process do more than that."""

    def __init__(self) -> None:
        self._pages: OrderedDict[str, _Rendered] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self._renders: asyncio.Semaphore | None = None

    def _fresh(self, slug: str, fingerprint: str) -> _Rendered | None:
        entry = self._pages.get(slug)
        if (
            entry
            and entry.fingerprint == fingerprint
            and time.monotonic() - entry.at < CACHE_SECONDS
        ):
            return entry
        return None

    async def get(self, pool: Any, slug: str) -> _Rendered:
        known_shape(slug)
        fingerprint = await pool.fetchval(_FINGERPRINT, slug)
        if fingerprint is None:
            raise NOT_FOUND
        if entry := self._fresh(slug, fingerprint):
            return entry
        lock = self._locks.setdefault(slug, asyncio.Lock())
        try:
            async with lock:
                if entry := self._fresh(slug, fingerprint):
                    return entry  # rendered while this request waited
                if self._renders is None:
                    self._renders = asyncio.Semaphore(RENDERS_AT_ONCE)
                async with self._renders, pool.acquire() as conn:
                    data = await page_data(conn, slug, datetime.now(UTC))
                entry = _Rendered(fingerprint, time.monotonic(), data)
                self._pages[slug] = entry
                self._pages.move_to_end(slug)
                while len(self._pages) > CACHE_PAGES:
                    self._pages.popitem(last=False)
                return entry
        finally:
            if not lock.locked() and self._locks.get(slug) is lock:
                del self._locks[slug]


pages = PageCache()
# A public page may be shown in no one else's frame, and runs no script at all.
PAGE_HEADERS = {
    "cache-control": "no-store",
    "x-frame-options": "DENY",
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self';"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def _html(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, context, status_code=status)
    response.headers.update(PAGE_HEADERS)
    return response


def _message(request: Request, slug: str, title: str, text: str, status: int = 200) -> HTMLResponse:
    return _html(request, "message.html", status, slug=slug, heading=title, text=text)


@router.get("/status/{slug}.json")
async def status_json(slug: str, st: StateDep) -> JSONResponse:
    entry = await pages.get(st.pool, slug)
    return JSONResponse(entry.data, headers={"cache-control": "no-store"})


@router.get("/status/{slug}", response_class=HTMLResponse)
async def status_html(slug: str, request: Request, st: StateDep) -> HTMLResponse:
    entry = await pages.get(st.pool, slug)
    if entry.html is None:
        entry.html = templates.get_template("status.html").render(
            request=request, page=entry.data, bar_class=bar_class, duration=_duration,
            today=date.today(), mail=bool(st.settings.smtp_url),
        )  # fmt: skip
    return HTMLResponse(entry.html, headers=PAGE_HEADERS)


@router.post("/status/{slug}/subscribe", response_class=HTMLResponse)
async def subscribe(
    slug: str, request: Request, st: StateDep, email: Annotated[str, Form(max_length=320)] = ""
) -> HTMLResponse:
    """Always the same answer, whether the address is new, pending or subscribed."""
    address = email.strip()
    known_shape(slug)
    async with st.pool.acquire() as conn:
        page = await conn.fetchrow(
            "SELECT id, title FROM status_pages WHERE slug = $1 AND public", slug
        )
    if page is None:
        raise NOT_FOUND
    if not st.settings.smtp_url:  # no confirmation could ever come: say so, keep nothing
        said = "Incident emails are not available here: this server sends no mail."
        return _message(request, slug, page["title"], said, 503)
    try:
        address = email_address(address) if len(address) <= 320 else ""
    except AddressError:
        address = ""
    if not address:
        return _message(request, slug, page["title"], "That is not one email address.", 422)
    # Counted as the same address however it is written (case, a Unicode domain).
    same = address.casefold()
    client = address_key(client_address(request))
    by_address, by_email = st.subscribers_by_address, st.subscribers_by_email
    if by_address.exceeded(client) or by_email.exceeded(same):
        return _message(request, slug, page["title"], "Too many requests. Try again later.", 429)
    by_address.count(client)
    by_email.count(same)
    async with st.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO subscribers (page_id, email) VALUES ($1, $2)"
            " ON CONFLICT (page_id, lower(email)) DO UPDATE SET email = subscribers.email"
            " RETURNING id, email, confirmed_at",
            page["id"], address,
        )  # fmt: skip
        if row["confirmed_at"] is None:
            await conn.execute(
                "INSERT INTO notifications (org_id, channel_type, address, channel_ref, kind,"
                " next_attempt_at, created_at, subscriber_id)"
                " SELECT org_id, 'email', $2, 'subscriber:' || $1::bigint, 'confirm', now(), now(),"
                " $1::bigint"
                " FROM status_pages WHERE id = $3",
                row["id"], row["email"], page["id"],
            )  # fmt: skip
            await conn.execute("SELECT pg_notify('lastseen_notifications', '')")
    return _message(
        request, slug, page["title"],
        "Thanks. If that address can receive mail, a confirmation link is on its way: "
        "nothing else is sent until it is clicked.",
    )  # fmt: skip


async def _subscriber(st: Any, slug: str, subscriber_id: int) -> Any:
    if not (1 <= subscriber_id <= MAX_ID and SLUG_SHAPE.fullmatch(slug)):
        return None  # an id beyond bigint, a slug no page can have: an invalid link
    return await st.pool.fetchrow(
        "SELECT s.id, s.email, s.confirmed_at, p.title FROM subscribers s"
        " JOIN status_pages p ON p.id = s.page_id WHERE s.id = $1 AND p.slug = $2",
        subscriber_id, slug,
    )  # fmt: skip


INVALID = "This link is invalid, or the address has already unsubscribed."


@router.get("/status/{slug}/confirm", response_class=HTMLResponse)
async def confirm(
    slug: str, request: Request, st: StateDep, s: int = 0, t: str = ""
) -> HTMLResponse:
    row = await _subscriber(st, slug, s)
    if row is None or not subscribers.verify(st.keyring, subscribers.CONFIRM, s, row["email"], t):
        return _message(request, slug, "Status page", INVALID, 400)
    await st.pool.execute(
        "UPDATE subscribers SET confirmed_at = coalesce(confirmed_at, now()) WHERE id = $1", s
    )
    text = "You are subscribed: you will get an email when an incident opens or resolves."
    return _message(request, slug, row["title"], text)


@router.api_route(
    "/status/{slug}/unsubscribe", methods=["GET", "POST"], response_class=HTMLResponse
)
async def unsubscribe(
    slug: str, request: Request, st: StateDep, s: int = 0, t: str = ""
) -> Response:
    """One click (GET), or RFC 8058's List-Unsubscribe-Post (POST)."""
    row = await _subscriber(st, slug, s)
    if row is None or not subscribers.verify(
        st.keyring, subscribers.UNSUBSCRIBE, s, row["email"], t
    ):
        return _message(request, slug, "Status page", INVALID, 400)
    await st.pool.execute("DELETE FROM subscribers WHERE id = $1", s)
    return _message(
        request, slug, row["title"], "You are unsubscribed. No more emails will be sent."
    )
