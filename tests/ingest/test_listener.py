"""The listener on real loopback sockets, on trio's autojump clock: timeouts run instantly."""

from __future__ import annotations

import socket as stdlib_socket

import pytest
import trio
import trio.testing

from ingest.clock import Clock
from ingest.listener import Listener, open_listen_socket
from ingest.protocol import Limits, Responder

from .conftest import TOKEN

PING = f"POST /api/v1/heartbeats/{TOKEN} HTTP/1.1\r\nHost: h\r\n\r\n".encode()


async def start(nursery: trio.Nursery, responder: Responder, limits: Limits | None = None):
    listener = Listener(responder, limits or Limits(), Clock())
    sock = open_listen_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    await nursery.start(listener.serve, sock)
    return listener, port


async def connect(port: int) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port)


async def read_until_closed(stream: trio.SocketStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some():
        data += chunk
    return data


async def read_response(stream: trio.SocketStream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some()
        assert chunk, data
        data += chunk
    return data


async def test_a_ping_over_tcp_gets_204_on_a_kept_alive_connection(autojump_clock, responder):
    async with trio.open_nursery() as nursery:
        listener, port = await start(nursery, responder)
        stream = await connect(port)
        for _ in range(3):
            await stream.send_all(PING)
            assert (await read_response(stream)).startswith(b"HTTP/1.1 204 No Content\r\n")
        await stream.aclose()
        await listener.stop(grace=1)


async def test_a_silent_connection_is_closed_after_the_head_timeout(autojump_clock, responder):
    async with trio.open_nursery() as nursery:
        listener, port = await start(nursery, responder)
        stream = await connect(port)
        start_time = trio.current_time()
        assert await read_until_closed(stream) == b""
        assert trio.current_time() - start_time == pytest.approx(10.0, abs=0.01)
        await listener.stop(grace=1)


async def test_a_trickled_head_gets_408_at_the_head_deadline(autojump_clock, responder):
    async with trio.open_nursery() as nursery:
        listener, port = await start(nursery, responder)
        stream = await connect(port)
        start_time = trio.current_time()

        async def trickle() -> None:
            with pytest.raises(trio.BrokenResourceError):
                for byte in PING[:-2] * 10:
                    await stream.send_all(bytes([byte]))
                    await trio.sleep(0.5)

        nursery.start_soon(trickle)
        data = await read_until_closed(stream)
        assert data.startswith(b"HTTP/1.1 408 ")
        assert trio.current_time() - start_time == pytest.approx(10.0, abs=0.6)
        await listener.stop(grace=1)


async def test_an_idle_keep_alive_connection_closes_after_5_seconds(autojump_clock, responder):
    async with trio.open_nursery() as nursery:
        listener, port = await start(nursery, responder)
        stream = await connect(port)
        await stream.send_all(PING)
        await read_response(stream)
        t = trio.current_time()
        assert await read_until_closed(stream) == b""
        assert trio.current_time() - t == pytest.approx(5.0, abs=0.01)
        await listener.stop(grace=1)


async def test_a_slow_body_gets_408_at_the_body_deadline(autojump_clock, responder):
    async with trio.open_nursery() as nursery:
        listener, port = await start(nursery, responder)
        stream = await connect(port)
        await stream.send_all(PING.replace(b"\r\n\r\n", b"\r\nContent-Length: 10\r\n\r\nabc"))
        t = trio.current_time()
        data = await read_until_closed(stream)
        assert data.startswith(b"HTTP/1.1 408 ")
        assert trio.current_time() - t == pytest.approx(10.0, abs=0.01)
        await listener.stop(grace=1)


async def test_at_the_cap_a_new_connection_replaces_the_idle_one_nearest_its_timeout(
    autojump_clock, responder
):
    async with trio.open_nursery() as nursery:
        listener, port = await start(nursery, responder, Limits(max_connections=5))
        held = []
        for _ in range(5):
            held.append(await connect(port))
            await trio.sleep(1)
        # held[1] is mid-head: busy, never evicted, although its deadline comes second.
        await held[1].send_all(PING[:20])
        await trio.sleep(0.1)
        newcomer = await connect(port)
        await newcomer.send_all(PING)
        assert (await read_response(newcomer)).startswith(b"HTTP/1.1 204")
        assert await read_until_closed(held[0]) == b""  # closed without a word
        stats = listener.statistics()
        assert (stats.open_connections, stats.evicted, stats.rejected) == (5, 1, 0)
        # The next newcomer passes over busy held[1] and takes the place of held[2].
        second = await connect(port)
        await second.send_all(PING)
        assert (await read_response(second)).startswith(b"HTTP/1.1 204")
        assert await read_until_closed(held[2]) == b""
        await held[1].send_all(PING[20:])
        assert (await read_response(held[1])).startswith(b"HTTP/1.1 204")
        await listener.stop(grace=1)


async def test_at_the_cap_with_every_connection_busy_a_new_one_is_closed_at_once(
    autojump_clock, responder
):
    async with trio.open_nursery() as nursery:
        listener, port = await start(nursery, responder, Limits(max_connections=5))
        held = [await connect(port) for _ in range(5)]
        for s in held:
            await s.send_all(PING[:20])  # each in the middle of a head
        await trio.sleep(0.1)
        extra = await connect(port)
        assert await read_until_closed(extra) == b""
        stats = listener.statistics()
        assert (stats.evicted, stats.rejected) == (0, 1)
        # The busy ones were not disturbed: each finishes its ping.
        for s in held:
            await s.send_all(PING[20:])
            assert (await read_response(s)).startswith(b"HTTP/1.1 204")
        await listener.stop(grace=1)


async def test_a_graceful_stop_finishes_the_request_in_progress(autojump_clock, responder):
    async with trio.open_nursery() as nursery:
        listener, port = await start(nursery, responder)
        idle = await connect(port)
        busy = await connect(port)
        await busy.send_all(PING[:20])
        await trio.sleep(0.1)
        async with trio.open_nursery() as inner:
            inner.start_soon(listener.stop, 5.0)
            await trio.sleep(1)
            # The idle connection was closed at once; the busy one may still finish.
            assert await read_until_closed(idle) == b""
            await busy.send_all(PING[20:])
            data = await read_until_closed(busy)
            assert data.startswith(b"HTTP/1.1 204")
        with pytest.raises(OSError):
            stdlib_socket.create_connection(("127.0.0.1", port), timeout=1).close()


async def test_a_graceful_stop_gives_up_on_requests_that_never_finish(autojump_clock, responder):
    async with trio.open_nursery() as nursery:
        listener, port = await start(nursery, responder)
        busy = await connect(port)
        await busy.send_all(PING[:20])
        await trio.sleep(0.1)
        t = trio.current_time()
        await listener.stop(grace=2.0)
        assert trio.current_time() - t == pytest.approx(2.0, abs=0.01)
        assert await read_until_closed(busy) == b""
