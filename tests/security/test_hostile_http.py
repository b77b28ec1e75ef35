"""Malformed and hostile requests against a real ingest listener over TCP: each gets the
right 4xx or a close, never a 5xx, and a request hidden in a body is never parsed."""

from __future__ import annotations

import re

import pytest
import trio

from ..support.dbhelp import running, seed
from ..support.exposure import EXPOSURE

STATUS = re.compile(rb"^HTTP/1\.[01] (\d{3}) ", re.M)

pytestmark = pytest.mark.security


async def exchange(port: int, data: bytes) -> list[int]:
    """Send `data`, read until the server closes or stays silent; the statuses answered."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    out = b""
    async with stream:
        try:
            await stream.send_all(data)
            with trio.move_on_after(1.5):
                while chunk := await stream.receive_some():
                    out += chunk
        except trio.BrokenResourceError:
            pass  # closed on us mid-send: a close is an answer
    EXPOSURE.text("raw HTTP answer to a hostile request", "responses", out.decode(errors="replace"))
    return [int(s) for s in STATUS.findall(out)]


def head(
    target: bytes, *headers: bytes, method: bytes = b"POST", version: bytes = b"HTTP/1.1"
) -> bytes:
    return (
        method
        + b" "
        + target
        + b" "
        + version
        + b"\r\n"
        + b"".join(h + b"\r\n" for h in headers)
        + b"\r\n"
    )


HOSTILE: list[tuple[str, bytes, set[int]]] = [
    ("two different Content-Lengths", head(b"{ping}", b"Host: h", b"Content-Length: 5", b"Content-Length: 6") + b"hello!", {400}),
    ("a Content-Length list", head(b"{ping}", b"Host: h", b"Content-Length: 5, 6") + b"hello!", {400}),
    ("an oversized Content-Length", head(b"{ping}", b"Host: h", b"Content-Length: 99999999999999999999"), {400, 413}),
    ("a negative Content-Length", head(b"{ping}", b"Host: h", b"Content-Length: -1"), {400}),
    ("Transfer-Encoding: gzip, chunked", head(b"{ping}", b"Host: h", b"Transfer-Encoding: gzip, chunked") + b"0\r\n\r\n", {400}),
    ("Transfer-Encoding and Content-Length", head(b"{ping}", b"Host: h", b"Transfer-Encoding: chunked", b"Content-Length: 3") + b"0\r\n\r\n", {400}),
    ("a bad chunk size", head(b"{ping}", b"Host: h", b"Transfer-Encoding: chunked") + b"zz\r\nhello\r\n0\r\n\r\n", {400}),
    ("a chunk size overflow", head(b"{ping}", b"Host: h", b"Transfer-Encoding: chunked") + b"ffffffffffffffffffff\r\n", {400, 413}),
    ("no Host on HTTP/1.1", head(b"{ping}"), {400}),
    ("two Hosts", head(b"{ping}", b"Host: a", b"Host: b"), {400}),
    ("NUL in a header value", head(b"{ping}", b"Host: h", b"X-A: a\x00b"), {400}),
    ("CR in a header value", head(b"{ping}", b"Host: h", b"X-A: a\rb"), {400}),
    ("an obs-folded header", head(b"{ping}", b"Host: h", b"X-A: a", b" folded"), {400}),
    ("bare LF line ends", b"POST {ping} HTTP/1.1\nHost: h\n\n", {400}),
    ("a space before the colon", head(b"{ping}", b"Host: h", b"X-A : b"), {400}),
    ("the HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", {400}),
    ("HTTP/0.9", b"GET {ping}\r\n", {400}),
    ("an unknown version", head(b"{ping}", b"Host: h", version=b"HTTP/3.0"), {400}),
    ("an absolute-form target", head(b"http://h{ping}", b"Host: h"), {400, 404}),
    ("a percent-encoded token", head(b"{encoded}", b"Host: h"), {404}),
    ("a target with a NUL", head(b"{ping}\x00", b"Host: h"), {400}),
    ("a 9 KiB header", head(b"{ping}", b"Host: h", b"X-A: " + b"a" * 9000), {431}),
    ("an unknown method", head(b"{ping}", b"Host: h", method=b"BREW"), {400, 405}),
    ("a lowercase method", head(b"{ping}", b"Host: h", method=b"post"), {400, 405}),
]  # fmt: skip


@pytest.fixture
def token_path(database_url):
    return database_url


@pytest.mark.parametrize(("why", "request_bytes", "allowed"), HOSTILE, ids=[h[0] for h in HOSTILE])
async def test_hostile_requests_get_a_4xx_or_a_close_and_never_count(
    database_url, why, request_bytes, allowed
):
    [m] = await seed(database_url, 1)
    path = f"/api/v1/heartbeats/{m.token}".encode()
    encoded = b"/api/v1/heartbeats/" + b"".join(b"%%%02x" % c for c in m.token.encode())
    data = request_bytes.replace(b"{ping}", path).replace(b"{encoded}", encoded)
    async with running(database_url) as ingest:
        before = ingest.table.get(m.id)["last_seen"]
        statuses = await exchange(ingest.port, data)
        assert all(s < 500 for s in statuses), (why, statuses)
        assert len(statuses) <= 1, (why, statuses)
        assert set(statuses) <= allowed, (why, statuses)
        assert ingest.table.get(m.id)["last_seen"] == before, why  # not a ping
        # And the listener is fine afterwards.
        assert await exchange(ingest.port, head(path, b"Host: h", b"Connection: close")) == [204]


SMUGGLED = [
    ("in a Content-Length body", lambda inner: head(b"/api/v1/heartbeats/" + b"0" * 64, b"Host: h", b"Content-Length: %d" % len(inner)) + inner),
    ("in a chunked body", lambda inner: head(b"/api/v1/heartbeats/" + b"0" * 64, b"Host: h", b"Transfer-Encoding: chunked") + b"%x\r\n" % len(inner) + inner + b"\r\n0\r\n\r\n"),
]  # fmt: skip


@pytest.mark.parametrize(("why", "wrap"), SMUGGLED, ids=[s[0] for s in SMUGGLED])
async def test_a_request_in_a_body_is_never_parsed(database_url, why, wrap):
    [m] = await seed(database_url, 1)
    inner = head(f"/api/v1/heartbeats/{m.token}".encode(), b"Host: h")
    async with running(database_url) as ingest:
        statuses = await exchange(ingest.port, wrap(inner))
        assert statuses == [404], statuses  # the outer request only (an unknown token)
        assert ingest.table.get(m.id)["last_seen"] == 0.0
