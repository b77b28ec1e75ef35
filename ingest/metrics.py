"""Prometheus text exposition for the ingest, and the admin listener that serves it.

The hot path keeps plain integer counters (in the fast path and the listener); this module
only reads them when /metrics is scraped, so metrics cost nothing per ping.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import h11
import trio

from core.prometheus import Health, Histogram, Metric, admin_get, render, sample

__all__ = ["Histogram", "Metric", "render", "sample", "serve_admin"]

log = logging.getLogger(__name__)

LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FLUSH_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


Handoff = Callable[[bytes], bool]


async def serve_admin(
    host: str,
    port: int,
    metrics: Callable[[], str],
    health: Health,
    handoff: Handoff | None = None,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """GET /metrics and GET /healthz on host:port, and POST /handoff from the cluster's
    other ingest processes (``handoff.py``; kept alive); reports the bound port."""

    async def handle(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16384)
        try:
            while True:
                with trio.move_on_after(ADMIN_IDLE_SECONDS) as idle:
                    request, body = await _read_request(stream, conn)
                if idle.cancelled_caught or request is None:
                    return
                keep = request.method == b"POST" and handoff is not None
                status, ctype, payload = _admin_route(request, body, metrics, health, handoff)
                headers = [("Content-Type", ctype), ("Content-Length", str(len(payload)))]
                if not keep:
                    headers.append(("Connection", "close"))
                data = conn.send(h11.Response(status_code=status, headers=headers)) or b""
                if payload:
                    data += conn.send(h11.Data(data=payload)) or b""
                data += conn.send(h11.EndOfMessage()) or b""
                await stream.send_all(data)
                if not keep or conn.our_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (h11.RemoteProtocolError, h11.LocalProtocolError, trio.BrokenResourceError,
                trio.ClosedResourceError, _TooLarge):  # fmt: skip
            pass
        finally:
            await stream.aclose()

    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    task_status.started(bound)
    await trio.serve_listeners(handle, listeners)


ADMIN_IDLE_SECONDS = 10.0  # to read a request, or between two on a kept-alive connection
MAX_ADMIN_BODY = 1 << 20  # a hand-off batch is at most 800 KB (handoff.MAX_BODY)


class _TooLarge(Exception):
    pass


async def _read_request(
    stream: trio.SocketStream, conn: h11.Connection
) -> tuple[h11.Request | None, bytes]:
    request: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            if not data and request is None:
                return None, b""
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_ADMIN_BODY:
                raise _TooLarge()
        elif isinstance(event, h11.EndOfMessage):
            return request, bytes(body)
        else:
            return None, b""


def _admin_route(
    request: h11.Request,
    body: bytes,
    metrics: Callable[[], str],
    health: Health,
    handoff: Handoff | None,
) -> tuple[int, str, bytes]:
    path = request.target.split(b"?", 1)[0]
    if request.method == b"POST" and path == b"/handoff" and handoff is not None:
        return (204, "text/plain", b"") if handoff(body) else (403, "text/plain", b"refused\n")
    return admin_get(request.method, path, metrics, health)
