"""Forwarding what is not a heartbeat to the control process: one public origin.

A small HTTP/1.1 client (h11 over trio streams) keeps idle upstream connections for reuse
and opens at most ``MAX_UPSTREAM`` at once (more requests wait for one, within the same
deadline), so a burst of forwarded requests cannot exhaust the control process's
descriptors. Each forwarded request carries X-Forwarded-For/-Proto/-Host; hop-by-hop
headers go neither way; a request without Host (HTTP/1.0) gets the upstream's. When the
control process is down or too slow, the client gets a JSON 502 or 504, never a hang.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field

import h11
import trio

from core.problems import error_json
from core.proxies import DEFAULT, TrustedProxies

HOP_BY_HOP = {
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
    b"trailer", b"transfer-encoding", b"upgrade", b"content-length", b"expect",
}  # fmt: skip
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
UPSTREAM_SECONDS = 30.0
IDLE_KEPT = 32
MAX_UPSTREAM = 64  # upstream connections open at once, idle ones included

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class Forward:
    """A complete request for the control process."""

    method: bytes
    target: bytes
    headers: Headers
    body: bytes


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Headers
    body: bytes


def _error(status: int, code: str, message: str) -> Answer:
    return Answer(status, [(b"content-type", b"application/json")], error_json(code, message))


class UpstreamError(Exception):
    pass


@dataclass
class Upstream:
    host: str
    port: int
    # Peers whose X-Forwarded-Proto/-Host are believed (a TLS proxy in front).
    trusted: Container[str] = field(default_factory=lambda: TrustedProxies.parse(DEFAULT))
    max_connections: int = MAX_UPSTREAM
    open_connections: int = 0  # idle ones included
    _idle: list[tuple[trio.SocketStream, h11.Connection]] = field(default_factory=list)
    # Requests waiting for a connection (the cap reached, none idle).
    _waiting: trio.lowlevel.ParkingLot = field(default_factory=trio.lowlevel.ParkingLot)

    async def forward(self, request: Forward, client: str) -> Answer:
        """Send `request` upstream; a JSON 502/504 if the control process fails us."""
        headers = [(k, v) for k, v in request.headers if k.lower() not in HOP_BY_HOP]
        given = {k.lower(): v for k, v in headers if k.lower().startswith(b"x-forwarded-")}
        host = next((v for k, v in request.headers if k.lower() == b"host"), b"")
        if not host:  # HTTP/1.0 may leave it out; HTTP/1.1 upstream needs one
            host = f"{self.host}:{self.port}".encode()
            headers.append((b"host", host))
        headers = [(k, v) for k, v in headers if not k.lower().startswith(b"x-forwarded-")]
        prior = [given[b"x-forwarded-for"]] if b"x-forwarded-for" in given else []
        # A TLS proxy on this machine says what the public scheme and host are; from
        # anyone else, those claims are ignored (the address chain is only appended to).
        trusted = client in self.trusted
        headers += [
            (b"x-forwarded-for", b", ".join([*prior, client.encode()])),
            (
                b"x-forwarded-proto",
                given.get(b"x-forwarded-proto", b"http") if trusted else b"http",
            ),
            (b"x-forwarded-host", given.get(b"x-forwarded-host", host) if trusted else host),
            (b"content-length", str(len(request.body)).encode()),
        ]
        while True:
            reused = bool(self._idle)
            try:
                with trio.fail_after(UPSTREAM_SECONDS):
                    return await self._exchange(request, headers)
            except trio.TooSlowError:
                return _error(504, "upstream_timeout", "the control process did not answer")
            except h11.LocalProtocolError:
                # Our side of the request cannot be sent as it is: not the connection's fault.
                return _error(400, "bad_request", "the request cannot be forwarded as sent")
            except (OSError, trio.BrokenResourceError, h11.ProtocolError, UpstreamError):
                if reused:
                    # A kept connection the upstream had closed: drop the idle ones, retry
                    # on a fresh connection (which ends the loop either way).
                    await self._close_idle()
                    continue
                return _error(502, "upstream_unavailable", "the control process is unavailable")

    async def _close_idle(self) -> None:
        idle, self._idle = self._idle, []
        for stream, _conn in idle:
            await self._close(stream)

    async def _close(self, stream: trio.SocketStream) -> None:
        self.open_connections -= 1
        self._waiting.unpark()
        await stream.aclose()

    async def _connection(self) -> tuple[trio.SocketStream, h11.Connection]:
        """An idle connection, a new one under the cap, or the first of either to free up."""
        while True:
            if self._idle:
                return self._idle.pop()
            if self.open_connections < self.max_connections:
                self.open_connections += 1
                try:
                    stream = await trio.open_tcp_stream(self.host, self.port)
                except BaseException:
                    self.open_connections -= 1
                    self._waiting.unpark()
                    raise
                return stream, h11.Connection(h11.CLIENT)
            await self._waiting.park()

    async def _exchange(self, request: Forward, headers: Headers) -> Answer:
        stream, conn = await self._connection()
        keep = False
        try:
            data = conn.send(
                h11.Request(method=request.method, target=request.target, headers=headers)
            )
            data = (data or b"") + (conn.send(h11.Data(data=request.body)) or b"")
            data += conn.send(h11.EndOfMessage()) or b""
            await stream.send_all(data)
            status = 0
            response_headers: Headers = []
            body = bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    chunk = await stream.receive_some(65536)
                    if not chunk and conn.their_state is h11.SEND_RESPONSE:
                        raise UpstreamError("closed before answering")
                    conn.receive_data(chunk)
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    response_headers = [
                        (k, v) for k, v in event.headers if k.lower() not in HOP_BY_HOP
                    ]
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > MAX_RESPONSE_BYTES:
                        raise UpstreamError("response too large")
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise UpstreamError("closed mid-response")
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()
                keep = len(self._idle) < IDLE_KEPT
            return Answer(status, response_headers, bytes(body))
        finally:
            if keep:
                self._idle.append((stream, conn))
                self._waiting.unpark()
            else:
                await self._close(stream)
