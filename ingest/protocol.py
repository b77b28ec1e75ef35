"""One HTTP/1.1 connection of the ingest, sans-IO: bytes in, bytes out, no sockets.

How this works
--------------
Bytes collect in a buffer that the native fast path reads first: it answers every complete
plain ping (pipelined ones too) and stops at the first request it is not sure of. That
request goes to a fresh h11 connection, after our own checks on its raw head (h11 is
lenient about bare LF line ends, obsolete line folding and control characters; we are
not). When h11 has finished the request and the connection stays open, the bytes h11 has
not used come back to the buffer and the fast path takes over again.

Limits (``Limits``): the request head (431 past it), its arrival time (408), body size
(413, without reading the rest) and time (408), idle keep-alive time, requests per
connection. Every refusal answers with a 4xx and closes; nothing here raises on bad input.
The I/O layer asks ``deadline()`` when to give up waiting and then calls ``timed_out()``.
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from dataclasses import dataclass

import h11

from core.proxies import normalise

from . import checkins, responses
from ._fastpath import CLOSE, NEED_MORE, FastPath
from .checkins import CheckIns, History, Signal
from .forward import Answer, Forward
from .responses import Reply

KIB = 1024
SECONDS = 1.0

_HEAD_END = re.compile(rb"\n\r?\n")  # where h11 ends a head
# What h11 lets through in a head and we refuse.
_BARE_LF = re.compile(rb"(?<!\r)\n")
_BARE_CR = re.compile(rb"\r(?!\n)")
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_OBS_FOLD = re.compile(rb"\r\n[ \t]")
# Both framings at once: a proxy in front may honour the other one (request smuggling).
_TE = re.compile(rb"\r\ntransfer-encoding[ \t]*:", re.I)
_CL = re.compile(rb"\r\ncontent-length[ \t]*:", re.I)


@dataclass(frozen=True)
class Limits:
    """Per-connection limits of the ingest listener."""

    max_head_bytes: int = 8 * KIB
    head_timeout: float = 10 * SECONDS
    # Of a ping's body (a job's output), what is kept; the rest is read and dropped, and
    # the ping counts (checkins.MAX_DECLARED_BODY is where a declared length is refused).
    max_body_bytes: int = 100_000
    body_timeout: float = 10 * SECONDS
    keepalive_timeout: float = 5 * SECONDS
    max_requests_per_connection: int = 1000
    max_connections: int = 10_000
    max_connections_per_address: int = 1_000  # trusted proxies are exempt
    send_timeout: float = 10 * SECONDS
    max_forward_body_bytes: int = 1024 * KIB  # requests forwarded to the control process
    forward_timeout: float = 35 * SECONDS


class Phase(enum.Enum):
    IDLE = "idle"  # between requests: nothing of the next one has arrived
    HEAD = "head"  # part of a request head has arrived
    BODY = "body"  # the head is in, the body is not
    FORWARD = "forward"  # a request is with the control process (see `pending`)
    CLOSED = "closed"


class ResponseCache:
    """What every connection of a listener shares: the fast path, the current Date and
    the responses rendered with it (re-rendered once a second), the count of responses
    the slow path sent, and where check-ins go (signals, pings with a body)."""

    def __init__(
        self, fast: FastPath, history: History | None = None, body_limit: int = 100_000
    ) -> None:
        self.fast = fast
        self.checkins = CheckIns(fast.table, history if history is not None else History())
        fast.log = self.checkins.history.native  # the fast path records its check-ins there
        # A check-in's answer says how much of a body is kept, as healthchecks' does.
        self.checked_in = responses.Reply(
            204, b"No Content", ((b"Ping-Body-Limit", str(body_limit).encode()),)
        )
        self.date = b""
        self._second = -1
        # Responses by status sent by the slow path (the fast path counts its own).
        self.status_counts: Counter[int] = Counter()

    def refresh(self, now: float) -> None:
        """Re-render the cached responses when the second changes."""
        second = int(now)
        if second != self._second:
            self._second = second
            self.date = date = responses.refresh(self.fast, now)
            fast = self.fast
            fast.checked_in_keep_alive = responses.render(
                self.checked_in, date, method=b"POST", close=False
            )
            fast.checked_in_close = responses.render(
                self.checked_in, date, method=b"POST", close=True
            )

    def count(self, status: int) -> None:
        self.status_counts[status] += 1


def check_head(head: bytes) -> str | None:
    """Our own refusals of a raw request head (h11 accepts these); None if fine."""
    if _BARE_LF.search(head):
        return "bare LF line ending in the request head"
    if _BARE_CR.search(head):
        return "bare CR in the request head"
    if _CONTROL.search(head):
        return "control character in the request head"
    if _OBS_FOLD.search(head):
        return "obsolete line folding in the request head"
    if _TE.search(head) and _CL.search(head):
        return "both Transfer-Encoding and Content-Length in the request head"
    return None


class Session:
    """The state of one connection. Feed it with receive(); send what it returns."""

    def __init__(
        self,
        responder: ResponseCache,
        limits: Limits,
        now: float,
        *,
        forwarding: bool = False,
        client: str | None = None,
        proxied: bool = False,
    ) -> None:
        self._responder = responder
        # Requests that are not heartbeats go to the control process (else: 404).
        self._forwarding = forwarding
        self._forward_body: bytearray | None = None
        # The peer's address; `proxied`: it is a trusted proxy, its X-Forwarded-For names
        # the client (for the ping history).
        self._client = client
        self._client_known = False  # _peer() has read it (once per connection, if at all)
        self._proxied = proxied
        self._signal: Signal | None = None  # the ping URL of the request being read
        self._ping_body = bytearray()
        self.pending: Forward | None = None
        self._fast = responder.fast
        self._limits = limits
        self._buf = bytearray()
        self._h11: h11.Connection | None = None
        self._request: h11.Request | None = None
        self._body_bytes = 0
        self.answered = 0
        self.phase = Phase.IDLE
        self.phase_since = now
        self._fresh = True  # no request yet: an idle timeout here is the head timeout
        # Closed on a refusal, maybe with unread bytes from the peer: close lingering, or
        # the kernel's reset can destroy our answer before the peer reads it.
        self.linger = False

    def _peer(self) -> str | None:
        """The peer's address in its canonical form (mapped IPv6 as IPv4), read once."""
        if not self._client_known:
            self._client = normalise(self._client) if self._client else None
            self._client_known = True
        return self._client

    # -- timing

    def deadline(self) -> float:
        """When the I/O layer should stop waiting and call timed_out()."""
        limits = self._limits
        if self.phase is Phase.IDLE:
            timeout = limits.head_timeout if self._fresh else limits.keepalive_timeout
        elif self.phase is Phase.HEAD:
            timeout = limits.head_timeout
        elif self.phase is Phase.BODY:
            timeout = limits.body_timeout
        elif self.phase is Phase.FORWARD:
            timeout = limits.forward_timeout
        else:
            return self.phase_since
        return self.phase_since + timeout

    def timed_out(self) -> bytes:
        """The deadline passed: the bytes to send before closing (408, or nothing if idle)."""
        if self.phase is Phase.IDLE or self.phase is Phase.CLOSED:
            self._close()
            return b""
        if self.phase is Phase.FORWARD:
            return self._refuse(responses.UPSTREAM_TIMEOUT)
        return self._refuse(responses.REQUEST_TIMEOUT)

    @property
    def closed(self) -> bool:
        return self.phase is Phase.CLOSED

    @property
    def busy(self) -> bool:
        """True while a request is partly received (a graceful stop waits for it)."""
        return self.phase in (Phase.HEAD, Phase.BODY, Phase.FORWARD)

    def _enter(self, phase: Phase, now: float) -> None:
        if phase is not self.phase:
            self.phase = phase
            self.phase_since = now

    def _close(self) -> None:
        self.phase = Phase.CLOSED
        self._buf.clear()
        self._h11 = None

    # -- input

    def receive(self, data: bytes, now: float) -> bytes:
        """Take bytes from the peer (b"" = it closed); returns the bytes to send.

        After it returns, ``closed`` says whether to close once they are sent.
        """
        if self.phase is Phase.CLOSED:
            return b""
        if not data:
            self._close()
            return b""
        if self._h11 is not None:
            self._h11.receive_data(data)
        else:
            self._buf += data
        if self.pending is not None:
            return b""  # pipelined behind a forwarded request: it waits its turn
        return self._run(now)

    def _run(self, now: float) -> bytes:
        out: list[bytes] = []
        while not self.closed and self.pending is None:
            if self._h11 is None:
                if not self._fast_step(now, out):
                    break
            elif not self._slow_step(now, out):
                break
        return b"".join(out)

    def _budget(self) -> int:
        return self._limits.max_requests_per_connection - self.answered

    def _fast_step(self, now: float, out: list[bytes]) -> bool:
        """Run the fast path; True if the slow path must take the next request."""
        if not self._buf:
            self._enter(Phase.IDLE, now)
            return False
        output, consumed, answered, reason = self._fast.process(self._buf, now, self._budget())
        if self._fast.log.unassigned:  # this connection's: process() ran for it alone
            self._responder.checkins.took_fast(self._peer(), self._proxied)
        if answered:
            out.append(output)
            del self._buf[:consumed]
            self.answered += answered
            self._fresh = False
            self.phase = Phase.IDLE
            self.phase_since = now
        if reason == CLOSE:
            self._close()
            return False
        if reason == NEED_MORE:
            if self._buf:
                self._enter(Phase.HEAD, now)
                if len(self._buf) > self._limits.max_head_bytes:
                    out.append(self._refuse(responses.HEAD_TOO_LARGE))
            else:
                self._enter(Phase.IDLE, now)
            return False
        return self._start_slow(now, out)

    def _start_slow(self, now: float, out: list[bytes]) -> bool:
        self._enter(Phase.HEAD, now)
        match = _HEAD_END.search(self._buf, 0, self._limits.max_head_bytes + 2)
        if match is None:
            if len(self._buf) > self._limits.max_head_bytes:
                out.append(self._refuse(responses.HEAD_TOO_LARGE))
            return False
        problem = check_head(bytes(self._buf[: match.end()]))
        if problem is not None:
            out.append(self._refuse(responses.bad_request(problem)))
            return False
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._limits.max_head_bytes)
        conn.receive_data(bytes(self._buf))
        self._buf.clear()
        self._h11 = conn
        self._request = None
        self._body_bytes = 0
        return True

    def _slow_step(self, now: float, out: list[bytes]) -> bool:
        """Advance the h11 connection by one event; False when waiting for bytes."""
        conn = self._h11
        assert conn is not None
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            out.append(self._refuse(responses.protocol_error(exc.error_status_hint, str(exc))))
            return False
        if event is h11.NEED_DATA:
            self._enter(Phase.HEAD if self._request is None else Phase.BODY, now)
            return False
        if isinstance(event, h11.Request):
            return self._on_request(conn, event, now, out)
        if isinstance(event, h11.Data):
            self._body_bytes += len(event.data)
            if self._body_bytes > self._body_limit():
                out.append(self._refuse(responses.PAYLOAD_TOO_LARGE))
                return False
            if self._forward_body is not None:
                self._forward_body += event.data
            elif self._signal is not None:  # keep the first max_body_bytes, drop the rest
                room = self._limits.max_body_bytes - len(self._ping_body)
                if room > 0:
                    self._ping_body += event.data[:room]
            return True
        if isinstance(event, h11.EndOfMessage):
            request = self._request
            assert request is not None
            if self._forward_body is not None:
                self.pending = Forward(
                    request.method, request.target, list(request.headers), bytes(self._forward_body)
                )
                self._forward_body = None
                self._enter(Phase.FORWARD, now)
                return False
            self._reply(conn, self._route(request, now), now, out)
            return True
        # ConnectionClosed, or PAUSED after a request h11 cannot continue from.
        self._close()
        return False

    def _on_request(
        self, conn: h11.Connection, request: h11.Request, now: float, out: list[bytes]
    ) -> bool:
        self._request = request
        self._enter(Phase.BODY, now)
        if request.http_version not in (b"1.0", b"1.1"):
            out.append(self._refuse(responses.bad_request("only HTTP/1.0 and HTTP/1.1 are served")))
            return False
        if not request.target.startswith(b"/"):
            out.append(self._refuse(responses.bad_request("the request target must be a path")))
            return False
        self._signal = checkins.parse(request.target)
        self._ping_body = bytearray()
        if self._forwarding and self._signal is None:
            self._forward_body = bytearray()
        length = _content_length(request)
        if length is not None and length > self._body_limit():
            out.append(self._refuse(responses.PAYLOAD_TOO_LARGE))
            return False
        if conn.they_are_waiting_for_100_continue:
            out.append(conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
        return True

    def _body_limit(self) -> int:
        if self._forward_body is not None:
            return self._limits.max_forward_body_bytes
        if self._signal is not None:
            return checkins.MAX_DECLARED_BODY  # read and truncated up to this
        return self._limits.max_body_bytes

    def forwarded(self, answer: Answer, now: float) -> bytes:
        """The control process answered the pending request: send it on, carry on."""
        conn = self._h11
        assert conn is not None and self.pending is not None
        self.pending = None
        out: list[bytes] = []
        headers = [*answer.headers, (b"content-length", str(len(answer.body)).encode())]
        if self.answered + 1 >= self._limits.max_requests_per_connection:
            headers.append((b"connection", b"close"))
        events: list[h11.Response | h11.Data] = [
            h11.Response(status_code=answer.status, headers=headers)
        ]
        if answer.body and self._request is not None and self._request.method != b"HEAD":
            events.append(h11.Data(data=answer.body))
        try:
            self._send(conn, events, answer.status, now, out)
        except h11.LocalProtocolError:
            out.append(self._refuse(responses.UPSTREAM_INVALID))
            return b"".join(out)
        return b"".join(out) + (self._run(now) if not self.closed else b"")

    def _route(self, request: h11.Request, now: float) -> Reply:
        signal = self._signal
        if signal is None:
            return responses.NO_ROUTE
        if request.method not in (b"POST", b"HEAD"):
            return responses.METHOD_NOT_ALLOWED
        if signal.plain and not self._body_bytes and not self._fast.record_plain:
            # A plain ping the fast path declined (odd headers): no history row wanted.
            if self._fast.ping_target(request.target, now) == 1:
                return responses.NO_CONTENT
            return responses.NOT_FOUND
        agent = forwarded = None
        for name, value in request.headers:
            if name == b"user-agent":
                agent = value
            elif name == b"x-forwarded-for" and self._proxied:
                forwarded = checkins.forwarded_client(value)
        known = self._responder.checkins.answer(
            signal, now, method=request.method, client=forwarded or self._peer(),
            user_agent=agent, body=bytes(self._ping_body), body_bytes=self._body_bytes,
        )  # fmt: skip
        self._ping_body = bytearray()
        return self._responder.checked_in if known else responses.NOT_FOUND

    def _reply(self, conn: h11.Connection, reply: Reply, now: float, out: list[bytes]) -> None:
        request = self._request
        assert request is not None
        close = self.answered + 1 >= self._limits.max_requests_per_connection
        head = request.method == b"HEAD"
        self._send(conn, reply.events(self._responder.date, close=close, head=head),
                   reply.status, now, out)  # fmt: skip

    def _send(
        self,
        conn: h11.Connection,
        events: list[h11.Response | h11.Data],
        status: int,
        now: float,
        out: list[bytes],
    ) -> None:
        self.answered += 1
        self._fresh = False
        for event in events:
            out.append(conn.send(event) or b"")
        out.append(conn.send(h11.EndOfMessage()) or b"")
        self._responder.count(status)
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            data, _closed = conn.trailing_data
            self._h11 = None
            self._request = None
            self._buf = bytearray(data)
            self.phase = Phase.IDLE
            self.phase_since = now
        else:
            self._close()

    def _refuse(self, reply: Reply) -> bytes:
        """Render a refusal that closes the connection."""
        head = self._request is not None and self._request.method == b"HEAD"
        method = b"HEAD" if head else b"POST"
        data = responses.render(reply, self._responder.date, method=method, close=True)
        self._responder.count(reply.status)
        self._close()
        self.linger = True
        return data


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)
    return None
