"""Email over SMTP (LASTSEEN_SMTP_URL, e.g. ``smtp://user:pass@host:587?starttls=true``;
``smtps://`` for TLS from the first byte), with plain-text and HTML bodies.

A 5xx reply is permanent (``SMTP 550 5.1.1 user unknown``); a 4xx reply and every
connection problem are tried again.
"""

from __future__ import annotations

import email.errors
import html
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from . import schema
from .base import Notice, Transport, TransportError

TYPE = "email"
SECRET_FIELDS = ()


def validate(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    schema.only(config, {"to"})
    return {"to": schema.email(config, "to")}, {}


def view(public: Mapping[str, Any], secret: Mapping[str, Any]) -> dict[str, Any]:
    return {"to": public["to"]}


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool
    start_tls: bool | None

    @classmethod
    def from_url(cls, url: str) -> Server:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("LASTSEEN_SMTP_URL must be smtp://host[:port] or smtps://host[:port]")
        query = {k: v[-1].lower() for k, v in parse_qs(parts.query).items()}
        use_tls = parts.scheme == "smtps"
        starttls = query.get("starttls")
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if use_tls else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=use_tls,
            # None: STARTTLS when the server offers it; true: required; false: never.
            start_tls=None if starttls is None else starttls in ("1", "true", "yes"),
        )


# Everything that ends a line for some reader of a header (CR, LF, VT, FF, the file,
# group and record separators, NEL, U+2028/2029) and every other control character.
_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def header_text(value: str) -> str:
    """A user's text (a monitor's name, a page's title) made safe for a header: every line
    break or control character becomes one space."""
    return _BREAKS.sub(" ", value).strip()


def message(notice: Notice, sender: str, to: str, *, extra_text: str = "") -> EmailMessage:
    mail = EmailMessage()
    mail["Subject"] = header_text(f"[lastseen] {notice.title}")
    mail["From"] = sender
    mail["To"] = to
    mail["Date"] = formatdate(notice.sent_at.timestamp(), usegmt=True)
    mail["Message-ID"] = make_msgid(idstring=notice.idempotency_key, domain="lastseen")
    mail["X-Lastseen-Event"] = notice.event
    mail.set_content(f"{notice.title}\n\n{notice.text}\n{extra_text}")
    mail.add_alternative(
        f'<!doctype html><html><body><h1 style="font-size:1.2em">{html.escape(notice.title)}</h1>'
        f"<p>{html.escape(notice.text)}</p>"
        + "".join(f"<p>{html.escape(line)}</p>" for line in extra_text.splitlines() if line)
        + "</body></html>",
        subtype="html",
    )
    return mail


def plain_message(
    *, sender: str, to: str, subject: str, text: str, message_key: str
) -> EmailMessage:
    mail = EmailMessage()
    mail["Subject"] = header_text(subject)
    mail["From"] = sender
    mail["To"] = to
    mail["Date"] = formatdate(usegmt=True)
    mail["Message-ID"] = make_msgid(idstring=message_key, domain="lastseen")
    mail.set_content(text)
    return mail


async def send_message(mail: EmailMessage, transport: Transport) -> None:
    """Send through the configured SMTP server; failures become TransportError."""
    url = transport.settings.smtp_url
    if not url:
        raise TransportError("email is not configured: set LASTSEEN_SMTP_URL")
    try:
        server = Server.from_url(url)
    except ValueError as exc:
        raise TransportError(str(exc)) from None
    try:
        await aiosmtplib.send(
            mail, hostname=server.host, port=server.port, username=server.username,
            password=server.password, use_tls=server.use_tls, start_tls=server.start_tls,
            timeout=transport.settings.timeout,
        )  # fmt: skip
    except aiosmtplib.SMTPRecipientsRefused as exc:
        first = exc.recipients[0]
        raise _reply(first.code, first.message) from None
    except aiosmtplib.SMTPTimeoutError:
        raise TransportError(f"SMTP timeout from {server.host}") from None
    except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPServerDisconnected, OSError) as exc:
        reason = "connection refused" if "refused" in str(exc).lower() else "connection failed"
        raise TransportError(f"SMTP {reason} ({server.host}:{server.port})") from None
    except aiosmtplib.SMTPResponseException as exc:
        raise _reply(exc.code, exc.message) from None
    except aiosmtplib.SMTPException as exc:
        raise TransportError(f"SMTP error: {schema_excerpt(str(exc))}") from None


def _reply(code: int, text: str) -> TransportError:
    return TransportError(f"SMTP {code} {schema_excerpt(text)}", permanent=500 <= code < 600)


def schema_excerpt(text: str) -> str:
    return " ".join(text.split())[:200]


def build(make: Callable[[], EmailMessage]) -> EmailMessage:
    """A message from `make`; an address or header the email package refuses (a row
    stored before addresses were checked) is a permanent failure, not a crash."""
    try:
        return make()
    except (ValueError, TypeError, email.errors.HeaderParseError) as exc:
        raise TransportError(
            f"the message cannot be built: {schema_excerpt(str(exc))}", permanent=True
        ) from None


async def send(
    notice: Notice, public: Mapping[str, Any], secret: Mapping[str, Any], transport: Transport
) -> None:
    mail = build(lambda: message(notice, transport.settings.smtp_from, public["to"]))
    await send_message(mail, transport)
