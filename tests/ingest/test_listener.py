"""The listener on real loopback sockets, on trio's autojump clock: timeouts run instantly."""

from __future__ import annotations

import socket as stdlib_socket

import pytest
import trio
import trio.testing

from core.proxies import TrustedProxies
from ingest.clock import Clock
from ingest.forward import Upstream
from ingest.listener import COMPACT_AT, Listener, open_listen_socket
from ingest.protocol import Limits, ResponseCache

from .conftest import TOKEN

PING = f"POST /api/v1/heartbeats/{TOKEN} HTTP/1.1\r\nHost: h\r\n\r\n".encode()


async def start(nursery: trio.Nursery, responder: ResponseCache, limits: Limits | None = None):
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


async def test_at_the_cap_a_new_connection_replaces_the_idle_or_partial_one_nearest_its_timeout(
    autojump_clock, responder
):
    async with trio.open_nursery() as nursery:
        listener, port = await start(nursery, responder, Limits(max_connections=5))
        held = []
        for _ in range(5):
            held.append(await connect(port))
            await trio.sleep(1)
        # held[0] is mid-head (a slow head keeps its first byte's deadline), held[1] has
        # a whole head and part of a body: the newcomer takes held[0]'s place, the next
        # one passes over held[1]'s body for the idle held[2].
        await held[0].send_all(PING[:1])
        body = PING.replace(b"\r\n\r\n", b"\r\nContent-Length: 4\r\n\r\nab")
        await held[1].send_all(body)
        await trio.sleep(0.1)
        newcomer = await connect(port)
        await newcomer.send_all(PING)
        assert (await read_response(newcomer)).startswith(b"HTTP/1.1 204")
        assert await read_until_closed(held[0]) == b""  # closed without a word
        stats = listener.statistics()
        assert (stats.open_connections, stats.evicted, stats.rejected) == (5, 1, 0)
        second = await connect(port)
        await second.send_all(PING)
        assert (await read_response(second)).startswith(b"HTTP/1.1 204")
        assert await read_until_closed(held[2]) == b""
        await held[1].send_all(b"cd")
        assert (await read_response(held[1])).startswith(b"HTTP/1.1 204")
        await listener.stop(grace=1)


async def test_at_the_cap_the_oldest_partial_head_goes_first(autojump_clock, responder):
    """A flood of one-byte heads (slowloris at the cap) cannot hold every place: each new
    connection replaces the oldest of them, and a ping that arrives whole gets its 204."""
    async with trio.open_nursery() as nursery:
        listener, port = await start(nursery, responder, Limits(max_connections=20))
        slow = []
        for _ in range(20):
            s = await connect(port)
            await s.send_all(b"P")
            slow.append(s)
            await trio.sleep(0.2)
        newcomers = []
        for i in range(5):
            newcomer = await connect(port)  # kept open: each one needs a place
            await newcomer.send_all(PING)
            assert (await read_response(newcomer)).startswith(b"HTTP/1.1 204")
            newcomers.append(newcomer)
            assert await read_until_closed(slow[i]) == b"", i
        # The younger slow heads were left alone: they may still finish.
        await slow[5].send_all(PING[1:])
        assert (await read_response(slow[5])).startswith(b"HTTP/1.1 204")
        assert listener.statistics().evicted == 5
        await listener.stop(grace=1)


async def test_a_partial_body_goes_only_when_nothing_idle_or_partial_is_left(
    autojump_clock, responder
):
    async with trio.open_nursery() as nursery:
        listener, port = await start(nursery, responder, Limits(max_connections=3))
        body = PING.replace(b"\r\n\r\n", b"\r\nContent-Length: 4\r\n\r\nab")
        held = []
        for _ in range(3):
            s = await connect(port)
            await s.send_all(body)
            held.append(s)
            await trio.sleep(1)
        extra = await connect(port)
        await extra.send_all(PING)
        assert (await read_response(extra)).startswith(b"HTTP/1.1 204")
        assert await read_until_closed(held[0]) == b""  # the oldest partial body
        assert listener.statistics().evicted == 1
        await listener.stop(grace=1)


async def test_at_the_cap_with_every_request_forwarded_a_new_one_is_closed_at_once(
    autojump_clock, responder
):
    async with trio.open_nursery() as nursery:
        # A control process that takes requests and never answers.
        silent = trio.socket.socket()
        await silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        held_upstream = []

        async def accept_and_hold() -> None:
            while True:
                conn, _ = await silent.accept()
                held_upstream.append(conn)

        nursery.start_soon(accept_and_hold)
        upstream = Upstream("127.0.0.1", silent.getsockname()[1], frozenset())
        listener = Listener(responder, Limits(max_connections=3), Clock(), upstream)
        sock = open_listen_socket("127.0.0.1", 0)
        port = sock.getsockname()[1]
        await nursery.start(listener.serve, sock)
        held = [await connect(port) for _ in range(3)]
        for s in held:
            await s.send_all(b"GET /api/v1/monitors HTTP/1.1\r\nHost: h\r\n\r\n")
        await trio.sleep(0.5)
        extra = await connect(port)
        assert await read_until_closed(extra) == b""
        stats = listener.statistics()
        assert (stats.evicted, stats.rejected) == (0, 1)
        await listener.stop(grace=0)
        nursery.cancel_scope.cancel()


async def test_a_forwarded_request_is_abandoned_when_its_client_goes(autojump_clock, responder):
    async with trio.open_nursery() as nursery:
        silent = trio.socket.socket()
        await silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        upstream_conns: list[trio.socket.SocketType] = []

        async def accept_and_hold() -> None:
            while True:
                conn, _ = await silent.accept()
                upstream_conns.append(conn)

        nursery.start_soon(accept_and_hold)
        upstream = Upstream("127.0.0.1", silent.getsockname()[1], frozenset())
        listener = Listener(responder, Limits(), Clock(), upstream)
        sock = open_listen_socket("127.0.0.1", 0)
        port = sock.getsockname()[1]
        await nursery.start(listener.serve, sock)
        client = await connect(port)
        await client.send_all(b"GET /status/big HTTP/1.1\r\nHost: h\r\n\r\n")
        await trio.sleep(0.5)
        assert len(upstream_conns) == 1 and upstream.open_connections == 1
        await client.aclose()
        await trio.sleep(0.5)
        # The upstream connection was closed (the control process sees the disconnect),
        # long before the 30 s the forward would otherwise wait.
        received = b""
        with trio.fail_after(1):
            while chunk := await upstream_conns[0].recv(65536):
                received += chunk
        assert received.startswith(b"GET /status/big HTTP/1.1\r\n")
        assert upstream.open_connections == 0
        assert listener.statistics().open_connections == 0
        await listener.stop(grace=0)
        nursery.cancel_scope.cancel()


async def test_one_address_gets_its_share_of_the_cap_and_no_more(autojump_clock, responder):
    limits = Limits(max_connections=10, max_connections_per_address=4)
    async with trio.open_nursery() as nursery:
        listener, port = await start(nursery, responder, limits)
        held = [await connect(port) for _ in range(4)]
        await trio.sleep(0.1)
        extra = await connect(port)
        answer = await read_until_closed(extra)
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b'"too_many_connections"' in answer
        assert listener.statistics().over_address_limit == 1
        # Closing one gives the address its place back.
        await held[0].aclose()
        await trio.sleep(0.1)
        again = await connect(port)
        await again.send_all(PING)
        assert (await read_response(again)).startswith(b"HTTP/1.1 204")
        await listener.stop(grace=1)


async def test_a_trusted_proxy_is_exempt_from_the_share(autojump_clock, responder):
    limits = Limits(max_connections=10, max_connections_per_address=2)
    async with trio.open_nursery() as nursery:
        listener = Listener(responder, limits, Clock(), trusted=TrustedProxies.parse("127.0.0.1"))
        sock = open_listen_socket("127.0.0.1", 0)
        port = sock.getsockname()[1]
        await nursery.start(listener.serve, sock)
        held = [await connect(port) for _ in range(6)]
        for s in held:
            await s.send_all(PING)
            assert (await read_response(s)).startswith(b"HTTP/1.1 204")
        assert listener.statistics().over_address_limit == 0
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


async def test_ended_connections_leave_the_reaper_long_before_their_deadlines(responder):
    """A new connection per ping (a cron job's curl): an ended connection's deadline entry
    goes once such entries are most of the reaper's heap, not at its deadline. Kept until
    then (ten seconds of a few thousand connections a second), they and their sessions
    were 400,000 objects that every full garbage collection walked: pauses of 100-200 ms,
    the p99 of such pings. On the real clock: the deadlines (10 s) never come during it."""
    once = PING.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    async with trio.open_nursery() as nursery:
        listener, port = await start(nursery, responder)
        for _ in range(3 * COMPACT_AT):
            stream = await connect(port)
            await stream.send_all(once)
            assert (await read_until_closed(stream)).startswith(b"HTTP/1.1 204 No Content\r\n")
            await stream.aclose()
        with trio.fail_after(5):
            while listener.statistics().open_connections:
                await trio.sleep(0.01)
        assert listener.statistics().accepted == 3 * COMPACT_AT
        assert listener.statistics().deadline_entries < 2 * COMPACT_AT
        await listener.stop(grace=1)
