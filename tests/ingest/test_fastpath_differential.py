"""The fast path never disagrees with h11: it declines, or reads exactly what h11 reads."""

from __future__ import annotations

import h11
import hypothesis.strategies as st
from h11._connection import _keep_alive
from hypothesis import HealthCheck, example, given, settings

from ingest._fastpath import COMPLETE, DECLINE, INCOMPLETE, parse_head

MAX_HEAD = 8192
TOKEN = "ab" * 32


def h11_reading(data: bytes) -> object:
    """What h11 makes of `data`: 'error', 'incomplete', 'body', or the request's reading."""
    if not data:
        return "incomplete"  # (h11 takes b"" as end of input)
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    conn.receive_data(data)
    try:
        request = conn.next_event()
        if request is h11.NEED_DATA:
            return "incomplete"
        assert isinstance(request, h11.Request)
        end = conn.next_event()
    except h11.RemoteProtocolError:
        return "error"
    if not isinstance(end, h11.EndOfMessage):
        return "body"
    consumed = len(data) - len(conn.trailing_data[0])
    return (consumed, request.method, request.target, _keep_alive(request), request.http_version)


def check(data: bytes) -> None:
    state, end, method, target, keep_alive = parse_head(data, MAX_HEAD)
    if state == COMPLETE:
        assert h11_reading(data) == (end, method, target, keep_alive, b"1.1")
        # Byte by byte: every proper prefix is incomplete, never accepted or declined.
        for cut in range(end):
            assert parse_head(data[:cut], MAX_HEAD)[0] == INCOMPLETE, cut
    elif state == INCOMPLETE:
        assert h11_reading(data) in ("incomplete", "error")
    else:
        assert state == DECLINE


# -- a grammar of plausible requests, then mutations of them

METHODS = st.sampled_from([b"POST", b"HEAD", b"GET", b"post", b"PUT", b"POST ", b"HEA"])
TARGETS = st.one_of(
    st.sampled_from([f"/api/v1/heartbeats/{TOKEN}".encode(), b"/", b"*", b"http://h/x"]),
    st.builds(lambda t, q: b"/api/v1/heartbeats/" + t + q,
              st.binary(max_size=70), st.sampled_from([b"", b"?a=b", b"?", b"#f"])),
)  # fmt: skip
VERSIONS = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 ", b"http/1.1"])
NAMES = st.one_of(
    st.sampled_from([
        b"Host", b"host", b"HOST", b"Content-Length", b"content-length", b"Connection",
        b"Transfer-Encoding", b"Expect", b"Upgrade", b"User-Agent", b"X-A", b"Host ",
        b" Host", b"", b"Con nection",
    ]),
    st.binary(min_size=1, max_size=8),
)  # fmt: skip
VALUES = st.one_of(
    st.sampled_from([
        b"0", b"00", b"1", b" 0 ", b"0, 0", b"", b"close", b"Close", b"keep-alive",
        b"x, close ,y", b"closed", b"upgrade", b"100-continue", b"chunked", b"h",
        b"a\tb", b"a  b ", b"\xff", b"a\x00b", b"a\rb", b"a\nb",
    ]),
    st.binary(max_size=12),
)  # fmt: skip
EOLS = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r"])


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    eol = draw(EOLS) if draw(st.integers(0, 9)) == 0 else b"\r\n"
    line = draw(METHODS) + b" " + draw(TARGETS) + b" " + draw(VERSIONS) + eol
    headers = b""
    for _ in range(draw(st.integers(0, 5))):
        sep = draw(st.sampled_from([b": ", b":", b" : ", b":\t"]))
        headers += draw(NAMES) + sep + draw(VALUES) + draw(EOLS)
    data = line + headers + eol + draw(st.sampled_from([b"", b"POST / HTTP/1.1\r\n", b"x"]))
    for _ in range(draw(st.integers(0, 2))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "drop", "insert"]))
        byte = bytes([draw(st.integers(0, 255))])
        if op == "flip":
            data = data[:i] + byte + data[i + 1 :]
        elif op == "drop":
            data = data[:i] + data[i + 1 :]
        else:
            data = data[:i] + byte + data[i:]
    return data


@st.composite
def near_valid(draw: st.DrawFn) -> bytes:
    """A well-formed ping with a few more headers: where a wrong acceptance would hide."""
    method = draw(st.sampled_from([b"POST", b"HEAD"]))
    headers = [(b"Host", b"h")]
    for _ in range(draw(st.integers(0, 3))):
        headers.insert(draw(st.integers(0, len(headers))), (draw(NAMES), draw(VALUES)))
    data = method + b" /api/v1/heartbeats/" + TOKEN.encode() + b" HTTP/1.1\r\n"
    data += b"".join(name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n"
    return data + draw(st.sampled_from([b"", b"0\r\n\r\n", b"abc", PLAIN_PREFIX]))


PLAIN_PREFIX = b"POST /api/v1/heartbeats/"
PLAIN = f"POST /api/v1/heartbeats/{TOKEN} HTTP/1.1\r\nHost: h\r\n\r\n".encode()


@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(requests())
@example(PLAIN)
@example(PLAIN.replace(b"Host: h", b"Host: h\r\nConnection: keep-alive, Close"))
@example(PLAIN.replace(b"Host: h", b"Host: h\r\nContent-Length: 0"))
@example(PLAIN.replace(b"Host: h", b"Host: h\r\nHost: h"))
@example(PLAIN + PLAIN)
def test_fast_path_agrees_with_h11_on_plausible_requests(data: bytes) -> None:
    check(data)


@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(near_valid())
def test_fast_path_agrees_with_h11_on_near_valid_requests(data: bytes) -> None:
    check(data)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200))
def test_fast_path_agrees_with_h11_on_random_bytes(data: bytes) -> None:
    check(data)


def test_the_plain_ping_is_taken_by_the_fast_path() -> None:
    # If the fast path declined everything, the differential tests would pass vacuously.
    assert parse_head(PLAIN)[0] == COMPLETE
    assert (
        parse_head(PLAIN.replace(b"Host: h", b"Host: h\r\nUser-Agent: curl/8\r\nAccept: */*"))[0]
        == COMPLETE
    )


def test_requests_with_body_framing_or_protocol_switches_are_declined() -> None:
    for header in [
        b"Transfer-Encoding: chunked",
        b"Expect: 100-continue",
        b"Upgrade: websocket",
        b"Content-Length: 1",
        b"Content-Length: 0\r\nContent-Length: 0",
    ]:
        assert parse_head(PLAIN.replace(b"Host: h", b"Host: h\r\n" + header))[0] == DECLINE
    assert parse_head(PLAIN.replace(b"HTTP/1.1", b"HTTP/1.0"))[0] == DECLINE
