"""The worker's admin listener: GET /metrics (Prometheus text) and GET /healthz, on
asyncio, one request per connection. It listens on 127.0.0.1 by default
(LASTSEEN_WORKER_ADMIN_LISTEN), as the ingest's admin listener does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import h11

from core.prometheus import Health, admin_get

IDLE_SECONDS = 10.0  # to read the request
MAX_HEAD = 16384


async def serve_admin(
    host: str, port: int, metrics: Callable[[], str], health: Health
) -> asyncio.Server:
    """Starts listening (port 0: any free one, see the server's sockets) and returns."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        try:
            async with asyncio.timeout(IDLE_SECONDS):
                request = await _read_request(reader, conn)
            if request is None:
                return
            path = request.target.split(b"?", 1)[0]
            status, ctype, payload = admin_get(request.method, path, metrics, health)
            headers = [("Content-Type", ctype), ("Content-Length", str(len(payload))),
                       ("Connection", "close")]  # fmt: skip
            data = conn.send(h11.Response(status_code=status, headers=headers)) or b""
            data += conn.send(h11.Data(data=payload)) or b""
            data += conn.send(h11.EndOfMessage()) or b""
            writer.write(data)
            await writer.drain()
        except (h11.RemoteProtocolError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return await asyncio.start_server(handle, host, port)


async def _read_request(reader: asyncio.StreamReader, conn: h11.Connection) -> h11.Request | None:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            conn.receive_data(data)
            if not data:
                return None
        elif isinstance(event, h11.Request):
            return event
        else:
            return None
