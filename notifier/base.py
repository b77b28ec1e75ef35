"""What every channel shares: the notice, the settings, and one HTTP transport.

A channel only builds its payload and says how to read its service's errors; the
transport here sends it (10 s timeout, no redirects, the SSRF guard) and turns every
failure into a TransportError whose message is the exact, secret-free reason, and which
says whether trying again can help (timeouts, connection errors, 408, 429, 5xx) and how
long the receiver asked us to wait.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from .guard import Blocked, GuardedTransport

TIMEOUT_SECONDS = 10.0
MAX_RETRY_AFTER_SECONDS = 3600.0
EVENTS = {
    "alert": "incident.opened",
    "recovery": "incident.resolved",
    "closed": "incident.resolved",  # resolvedBy "pause": closed, not recovered
    "test": "test",
    "confirm": "subscription.confirm",
    "blind": "system.blind",  # lastseen's own trouble: no monitor, no incident
    "sighted": "system.sighted",
}


@dataclass(frozen=True)
class Blindness:
    """A blind period of the cluster (ingest/sight.py), as a system notice tells it."""

    since: datetime  # the first miss it undid
    detected_at: datetime
    late: int  # monitors late at once in the window that decided it
    heard: int  # pings on time for the same seconds
    back_at: datetime | None = None  # pings came back: everyone judged afresh from here
    unknown: int = 0  # monitors unknown at most


class TransportError(Exception):
    """A delivery failed. `permanent`: trying again cannot help. `retry_after`: seconds
    the receiver asked us to wait (already clamped to an hour)."""

    def __init__(
        self, message: str, *, permanent: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.retry_after = retry_after


@dataclass(frozen=True)
class Notice:
    """One thing to tell one channel: an incident opened, recovered or closed by a pause,
    or a test. `last_ping_at`: the monitor's last ping before the incident; `expected_at`:
    the deadline it missed first; `resolved_by`: what closed it (ping, pause); `cause`:
    what opened it (``missed`` deadlines, a ``failed`` signal with `exit_status`, or a
    run past its maxRuntimeSec: ``timeout``)."""

    kind: str  # alert | recovery | closed | test
    monitor_id: int
    monitor_name: str
    incident_id: int | None
    opened_at: datetime | None
    resolved_at: datetime | None
    sent_at: datetime
    idempotency_key: str
    last_ping_at: datetime | None = None
    expected_at: datetime | None = None
    resolved_by: str | None = None
    cause: str = "missed"
    exit_status: int | None = None
    blindness: Blindness | None = None  # kinds blind and sighted

    @property
    def event(self) -> str:
        return EVENTS[self.kind]

    @property
    def title(self) -> str:
        return self.title_for(_plain)

    @property
    def text(self) -> str:
        """One plain sentence or two for chat channels and the email body."""
        return self.text_for(_plain)

    def title_for(self, escape: Callable[[str], str]) -> str:
        """The title with the monitor's name passed through `escape`: a name is the
        user's text, and must never become markup, a link or a mention in a channel."""
        if self.kind == "blind":
            return "lastseen CANNOT SEE PINGS"
        if self.kind == "sighted":
            return "lastseen SEES PINGS AGAIN"
        verb = {"alert": "DOWN", "recovery": "RECOVERED", "closed": "PAUSED"}.get(
            self.kind, "Test alert"
        )
        if self.kind == "alert" and self.cause in ("failed", "timeout"):
            verb = {"failed": "FAILED", "timeout": "RUNNING TOO LONG"}[self.cause]
        return f"{verb}: {escape(self.monitor_name)}"

    def text_for(self, escape: Callable[[str], str]) -> str:
        if self.blindness is not None:
            return self._system_text(self.blindness)
        name = escape(self.monitor_name)
        late = _when(self.expected_at or self.opened_at)
        failed = self.cause == "failed"
        if self.kind == "alert" and failed:
            status = "" if self.exit_status is None else f" (exit status {self.exit_status})"
            text = f"Job of heartbeat monitor “{name}” reported a failure{status} at {late}."
            if self.last_ping_at is None:
                return text + " No ping before it."
            ago = duration((self.sent_at - self.last_ping_at).total_seconds())
            return text + f" The ping before it: {_when(self.last_ping_at)} ({ago} ago)."
        if self.kind == "alert" and self.cause == "timeout":
            return (
                f"Job of heartbeat monitor “{name}” is running too long: started, and no "
                f"success or failure by {late} (its maxRuntimeSec)."
            )
        if self.kind == "recovery" and (failed or self.cause == "timeout"):
            return (
                f"Heartbeat monitor “{name}” succeeded again: a ping at "
                f"{_when(self.resolved_at)}, "
                f"{'failing' if failed else 'running too long'} since {late}."
            )
        if self.kind == "alert":
            if self.last_ping_at is None:
                return f"Heartbeat monitor “{name}” stopped pinging: no ping by {late}."
            ago = duration((self.sent_at - self.last_ping_at).total_seconds())
            return (
                f"Heartbeat monitor “{name}” stopped pinging: last ping at "
                f"{_when(self.last_ping_at)} ({ago} ago), expected by {late}."
            )
        if self.kind == "recovery":
            return (
                f"Heartbeat monitor “{name}” is pinging again: a ping at "
                f"{_when(self.resolved_at)}, late since {late}."
            )
        if self.kind == "closed":
            return (
                f"Monitoring of heartbeat monitor “{name}” was paused at "
                f"{_when(self.resolved_at)} while it was down (late since {late}): its "
                "incident is closed without a recovery; no ping has arrived."
            )
        return f"Test alert for heartbeat monitor “{name}”: this channel works."

    def _system_text(self, b: Blindness) -> str:
        if self.kind == "blind":
            return (
                f"Pings stopped reaching lastseen for nearly every monitor at once, since "
                f"{_when(b.since)}: {b.late} monitors were late together and {b.heard} "
                "pings arrived on time for the same seconds. Their state is unknown, and no "
                "incident opens for a missed ping until pings arrive again. Check what is "
                "in front of lastseen (load balancer, proxy, DNS, the network). Failures "
                "that jobs report still alert."
            )
        back = b.back_at or self.sent_at
        return (
            f"Pings reach lastseen again since {_when(back)} (blind since {_when(b.since)}, "
            f"{duration((back - b.since).total_seconds())}). At most {b.unknown} monitors "
            f"were unknown; every monitor is judged afresh from {_when(back)}: one that "
            "does not ping within its period and grace from then alerts."
        )

    def as_json(self) -> dict[str, Any]:
        """The webhook payload, and what the other channels' text is made from."""
        if self.blindness is not None:
            b = self.blindness
            return {
                "event": self.event,
                "monitor": None,
                "incident": None,
                "blindness": {
                    "since": iso(b.since),
                    "detectedAt": iso(b.detected_at),
                    "backAt": iso(b.back_at),
                    "lateMonitors": b.late,
                    "pingsOnTime": b.heard,
                    "unknownMonitors": b.unknown,
                },
                "text": self.text,
                "sentAt": iso(self.sent_at),
            }
        incident = None
        if self.incident_id is not None:
            incident = {
                "id": self.incident_id,
                "openedAt": iso(self.opened_at),
                "resolvedAt": iso(self.resolved_at),
                "resolvedBy": self.resolved_by,
                "lastPingAt": iso(self.last_ping_at),
                "expectedAt": iso(self.expected_at),
                "cause": self.cause,
                "exitStatus": self.exit_status,
            }
        return {
            "event": self.event,
            "monitor": {"id": self.monitor_id, "name": self.monitor_name},
            "incident": incident,
            "sentAt": iso(self.sent_at),
        }


def _plain(text: str) -> str:
    return text


def iso(value: datetime | None) -> str | None:
    """ISO 8601 for the API and payloads; None stays None."""
    return value.isoformat() if value is not None else None


def duration(seconds: float) -> str:
    """ "3 min 20 s", "2 h 5 min", "45 s", "7 d": a span as people say it, to the second,
    in its two largest units (alert texts, the dashboard's periods)."""
    seconds = max(0, round(seconds))
    days, seconds = divmod(seconds, 86_400)
    hours, seconds = divmod(seconds, 3_600)
    minutes, seconds = divmod(seconds, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "min"), (seconds, "s")]
    shown = [f"{n} {unit}" for n, unit in parts if n][:2]
    return " ".join(shown) or "0 s"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "unknown"


@dataclass(frozen=True)
class Settings:
    """Where alerts go out from: SMTP, the Telegram Bot API, and the guard (built from
    the process's configuration, core.settings, by control.delivery.channel_settings)."""

    allow_private: bool = False
    smtp_url: str | None = None
    smtp_from: str = "lastseen@localhost"
    telegram_api: str = "https://api.telegram.org"
    # Where links in mails point (status pages, unsubscribe): the public origin.
    public_url: str = "http://127.0.0.1:8080"
    timeout: float = TIMEOUT_SECONDS


def clamp_retry_after(seconds: float | None) -> float | None:
    if seconds is None or seconds != seconds or seconds < 0:
        return None
    return min(float(seconds), MAX_RETRY_AFTER_SECONDS)


def retry_after_header(response: httpx.Response, now: datetime | None = None) -> float | None:
    """`Retry-After` in seconds (delta-seconds or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return clamp_retry_after(float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = now or datetime.now(when.tzinfo)
    return clamp_retry_after(max(0.0, (when - now).total_seconds()))


def excerpt(text: str, limit: int = 200) -> str:
    """A response body as one short line for an error message."""
    line = re.sub(r"\s+", " ", text).strip()
    return line if len(line) <= limit else line[: limit - 1] + "…"


def json_body(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        return None


# A channel's reading of an error response: (detail for the message, retry-after seconds).
Describe = Callable[[httpx.Response], tuple[str, float | None]]


def describe_plain(response: httpx.Response) -> tuple[str, float | None]:
    return excerpt(response.text), None


class Transport:
    """The one HTTP client every channel posts through. Use as an async context manager."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client = httpx.AsyncClient(
            transport=GuardedTransport(allow_private=settings.allow_private),
            timeout=settings.timeout,
            follow_redirects=False,
            headers={"user-agent": "lastseen-notifier/1"},
        )

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def post(
        self,
        url: str,
        *,
        content: bytes,
        headers: Mapping[str, str] | None = None,
        describe: Describe = describe_plain,
    ) -> httpx.Response:
        """POST `content` to `url`; returns a 2xx response or raises TransportError.

        The message never contains the URL's path or query (they hold webhook secrets
        and bot tokens): only its host.
        """
        try:
            host = httpx.URL(url).host or "the receiver"
        except httpx.InvalidURL:
            raise TransportError("the URL is not valid", permanent=True) from None
        merged = {"content-type": "application/json", **(headers or {})}
        try:
            response = await self._client.post(url, content=content, headers=merged)
        except Blocked as exc:
            raise TransportError(str(exc), permanent=True) from None
        except httpx.InvalidURL:
            raise TransportError(f"the URL for {host} is not valid", permanent=True) from None
        except httpx.UnsupportedProtocol:
            raise TransportError(
                "only http:// and https:// URLs are allowed", permanent=True
            ) from None
        except httpx.TimeoutException:
            raise TransportError(f"timeout after {self.settings.timeout:g} s from {host}") from None
        except httpx.ConnectError as exc:
            raise TransportError(_connect_error(exc, host)) from None
        except (httpx.ReadError, httpx.WriteError):
            raise TransportError(f"connection to {host} lost before its answer") from None
        except httpx.RemoteProtocolError:
            raise TransportError(f"{host} did not answer in HTTP") from None
        except httpx.TransportError as exc:
            raise TransportError(f"{type(exc).__name__} from {host}") from None
        status = response.status_code
        if 200 <= status < 300:
            return response
        if 300 <= status < 400:
            raise TransportError(
                f"HTTP {status} from {host}: redirects are not followed", permanent=True
            )
        detail, retry_after = describe(response)
        message = f"HTTP {status} from {host}" + (f": {detail}" if detail else "")
        if status in (408, 429) or status >= 500:
            retry_after = retry_after if retry_after is not None else retry_after_header(response)
            raise TransportError(message, retry_after=retry_after)
        raise TransportError(message, permanent=True)


def _refused(exc: BaseException, depth: int = 0) -> bool:
    """Is a ConnectionRefusedError behind `exc` (its causes, or an exception group's)?"""
    if isinstance(exc, ConnectionRefusedError):
        return True
    if depth > 8:
        return False
    inner = [exc.__cause__, exc.__context__, *getattr(exc, "exceptions", ()), *exc.args]
    return any(_refused(e, depth + 1) for e in inner if isinstance(e, BaseException))


def _connect_error(exc: httpx.ConnectError, host: str) -> str:
    if _refused(exc):
        return f"connection refused by {host}"
    text = str(exc)
    if "resolve" in text.lower() or "name or service" in text.lower():
        return f"cannot resolve {host}"
    return f"cannot connect to {host}: {excerpt(text, 120)}"
