"""Everything that is not a heartbeat goes to the control process, in order, bounded."""

from __future__ import annotations

import json
from functools import partial

import trio

from core.pg import free_port
from ingest.forward import Answer, Forward, Upstream
from ingest.protocol import Limits, Phase, Session

from .conftest import T0, TOKEN
from .test_protocol import ping, responses


def forwarding(responder) -> Session:
    return Session(responder, Limits(), T0, forwarding=True)


def test_an_api_request_waits_for_the_control_process_and_pipelined_pings_wait_behind(
    responder,
):
    session = forwarding(responder)
    request = b"POST /api/v1/monitors HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}"
    assert session.receive(request + ping(), T0) == b""
    assert session.phase is Phase.FORWARD
    pending = session.pending
    assert isinstance(pending, Forward)
    assert (pending.method, pending.target, pending.body) == (b"POST", b"/api/v1/monitors", b"{}")
    out = session.forwarded(Answer(201, [(b"content-type", b"application/json")], b'{"id":1}'), T0)
    assert [r[0] for r in responses(out)] == [201, 204]  # in order
    assert responses(out)[0][2] == b'{"id":1}'


def test_forwarded_bodies_may_reach_1_mib_and_no_more(responder):
    head = "POST /api/v1/monitors HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n"
    ok = forwarding(responder)
    body = b"x" * (1024 * 1024)
    ok.receive(head.format(len(body)).encode() + body, T0)
    assert ok.pending is not None and len(ok.pending.body) == len(body)
    too_big = forwarding(responder)
    out = too_big.receive(head.format(len(body) + 1).encode(), T0)
    assert responses(out)[0][0] == 413


def test_heartbeats_are_never_forwarded(responder):
    session = forwarding(responder)
    assert (
        responses(session.receive(ping(TOKEN, extra="Content-Length: 1\r\n") + b"x", T0))[0][0]
        == 204
    )
    assert session.pending is None


async def test_a_control_process_that_is_down_gets_a_json_502():
    upstream = Upstream("127.0.0.1", free_port())
    answer = await upstream.forward(
        Forward(b"GET", b"/api/v1/me", [(b"host", b"h")], b""), "1.2.3.4"
    )
    assert answer.status == 502
    assert json.loads(answer.body)["error"]["code"] == "upstream_unavailable"


async def test_the_client_address_and_host_travel_upstream_and_connections_are_reused():
    seen: list[bytes] = []
    opened: list[int] = []

    async with trio.open_nursery() as nursery:
        port = await _counting_server(nursery, seen, opened)
        upstream = Upstream("127.0.0.1", port)
        headers = [
            (b"host", b"public.example"),
            (b"x-forwarded-for", b"10.9.9.9"),
            (b"x-forwarded-proto", b"https"),
        ]
        request = Forward(b"GET", b"/api/v1/me", headers, b"")
        for _ in range(3):
            answer = await upstream.forward(request, "192.0.2.7")
            assert (answer.status, answer.body) == (200, b"ok")
        await upstream.forward(request, "127.0.0.1")  # a TLS proxy on this machine
        nursery.cancel_scope.cancel()
    assert len(seen) == 4 and len(opened) == 1
    head = seen[0].lower()
    assert b"x-forwarded-for: 10.9.9.9, 192.0.2.7" in head
    assert b"x-forwarded-host: public.example" in head
    assert b"host: public.example" in head
    assert b"x-forwarded-proto: http\r\n" in head + b"\r\n"  # a stranger's claim is ignored
    assert b"x-forwarded-proto: https" in seen[3].lower()  # the local proxy's is kept


async def _counting_server(nursery: trio.Nursery, seen: list[bytes], opened: list[int]) -> int:
    """An upstream that answers 200 after 50 ms, keeps every request head in `seen` and
    counts the connections it was opened in `opened`."""

    async def server(stream: trio.SocketStream) -> None:
        opened.append(1)
        buf = b""
        while True:
            chunk = await stream.receive_some()
            if not chunk:
                return
            buf += chunk
            while b"\r\n\r\n" in buf:
                head, buf = buf.split(b"\r\n\r\n", 1)
                seen.append(head)
                await trio.sleep(0.05)
                await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    listeners = await nursery.start(partial(trio.serve_tcp, server, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def test_an_http_1_0_request_without_host_is_forwarded_and_keeps_idle_connections():
    seen: list[bytes] = []
    opened: list[int] = []
    async with trio.open_nursery() as nursery:
        port = await _counting_server(nursery, seen, opened)
        upstream = Upstream("127.0.0.1", port, frozenset())
        with_host = Forward(b"GET", b"/api/v1/me", [(b"host", b"h")], b"")
        assert (await upstream.forward(with_host, "192.0.2.7")).status == 200
        hostless = Forward(b"GET", b"/api/v1/me", [], b"")
        answer = await upstream.forward(hostless, "192.0.2.7")
        assert (answer.status, answer.body) == (200, b"ok")
        assert (await upstream.forward(with_host, "192.0.2.7")).status == 200
        nursery.cancel_scope.cancel()
    assert f"host: 127.0.0.1:{port}".encode() in seen[1].lower()
    assert len(opened) == 1  # one connection served all three: nothing was dropped


async def test_upstream_connections_are_capped_and_requests_over_the_cap_wait():
    seen: list[bytes] = []
    opened: list[int] = []
    async with trio.open_nursery() as nursery:
        port = await _counting_server(nursery, seen, opened)
        upstream = Upstream("127.0.0.1", port, frozenset(), max_connections=4)
        request = Forward(b"GET", b"/api/v1/me", [(b"host", b"h")], b"")
        statuses: list[int] = []
        peak = 0

        async def one() -> None:
            nonlocal peak
            statuses.append((await upstream.forward(request, "192.0.2.7")).status)

        async with trio.open_nursery() as burst:
            for _ in range(40):
                burst.start_soon(one)
            while len(statuses) < 40:
                peak = max(peak, upstream.open_connections)
                await trio.sleep(0.005)
        nursery.cancel_scope.cancel()
    assert statuses == [200] * 40
    assert len(opened) <= 4 and peak <= 4
