"""The ingest's responses, rendered by h11 so both paths send the same bytes.

Every response lastseen's listener sends is described here once. The slow path hands the
events to its h11 connection; the fast path uses bytes rendered by a throwaway h11
connection from the very same events, refreshed when the Date header changes (once a
second).
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import formatdate

import h11

from core.problems import error_json

from ._fastpath import FastPath

ALLOW = b"POST, HEAD"


@dataclass(frozen=True)
class Reply:
    """One response: status, reason, extra headers and a body (dropped for HEAD)."""

    status: int
    reason: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""

    def events(self, date: bytes, *, close: bool, head: bool) -> list[h11.Response | h11.Data]:
        headers = [(b"Date", date), *self.headers]
        if self.status != 204 and not (100 <= self.status < 200):
            headers.append((b"Content-Length", str(len(self.body)).encode()))
        if close:
            headers.append((b"Connection", b"close"))
        out: list[h11.Response | h11.Data] = [
            h11.Response(status_code=self.status, reason=self.reason, headers=headers)
        ]
        if self.body and not head:
            out.append(h11.Data(data=self.body))
        return out


def _error(
    status: int, reason: bytes, code: str, message: str, *extra: tuple[bytes, bytes]
) -> Reply:
    body = error_json(code, message)
    return Reply(status, reason, ((b"Content-Type", b"application/json"), *extra), body)


NO_CONTENT = Reply(204, b"No Content")
NOT_FOUND = _error(404, b"Not Found", "not_found", "no heartbeat monitor has this token")
NO_ROUTE = _error(404, b"Not Found", "not_found", "no such route")
METHOD_NOT_ALLOWED = _error(
    405,
    b"Method Not Allowed",
    "method_not_allowed",
    "heartbeats take POST or HEAD",
    (b"Allow", ALLOW),
)
PAYLOAD_TOO_LARGE = _error(
    413, b"Payload Too Large", "payload_too_large", "the request body is larger than the limit"
)
HEAD_TOO_LARGE = _error(
    431,
    b"Request Header Fields Too Large",
    "header_too_large",
    "the request head is larger than the limit",
)
REQUEST_TIMEOUT = _error(408, b"Request Timeout", "request_timeout", "the request took too long")
UPSTREAM_TIMEOUT = _error(
    504, b"Gateway Timeout", "upstream_timeout", "the control process did not answer"
)
UPSTREAM_INVALID = _error(
    502, b"Bad Gateway", "upstream_invalid", "the control process answered something invalid"
)


def bad_request(message: str) -> Reply:
    return _error(400, b"Bad Request", "bad_request", message)


def protocol_error(status: int, message: str) -> Reply:
    """The reply to a request h11 or our own checks refused (always closes)."""
    reasons = {
        400: b"Bad Request",
        408: b"Request Timeout",
        413: b"Payload Too Large",
        431: b"Request Header Fields Too Large",
        501: b"Not Implemented",
        505: b"HTTP Version Not Supported",
    }
    if status == 431:
        return HEAD_TOO_LARGE
    if status not in reasons or status >= 500:
        status = 400
    return _error(status, reasons[status], "bad_request", message)


def http_date(now: float) -> bytes:
    return formatdate(now, usegmt=True).encode()


def render(reply: Reply, date: bytes, *, method: bytes, close: bool) -> bytes:
    """The bytes h11 sends for `reply` to a `method` request."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"%s / HTTP/1.1\r\nHost: x\r\n\r\n" % method)
    request = conn.next_event()
    assert isinstance(request, h11.Request)
    conn.next_event()  # EndOfMessage
    events = reply.events(date, close=close, head=method == b"HEAD")
    out = b"".join(conn.send(event) or b"" for event in events)
    return out + (conn.send(h11.EndOfMessage()) or b"")


def refresh(fast: FastPath, now: float) -> bytes:
    """Re-render the fast path's responses for the current second; returns the Date."""
    date = http_date(now)
    fast.ok_keep_alive = render(NO_CONTENT, date, method=b"POST", close=False)
    fast.ok_close = render(NO_CONTENT, date, method=b"POST", close=True)
    fast.not_found_keep_alive = render(NOT_FOUND, date, method=b"POST", close=False)
    fast.not_found_close = render(NOT_FOUND, date, method=b"POST", close=True)
    fast.not_found_head_keep_alive = render(NOT_FOUND, date, method=b"HEAD", close=False)
    fast.not_found_head_close = render(NOT_FOUND, date, method=b"HEAD", close=True)
    return date
