"""The sans-IO connection: bytes in, bytes out, every input whole and byte by byte."""

from __future__ import annotations

import h11
import pytest

from core.tokens import digest
from ingest.protocol import Limits, Phase, Session

from .conftest import OTHER, T0, TOKEN


def ping(token: str = TOKEN, method: str = "POST", extra: str = "") -> bytes:
    return f"{method} /api/v1/heartbeats/{token} HTTP/1.1\r\nHost: h\r\n{extra}\r\n".encode()


def responses(data: bytes) -> list[tuple[int, list[tuple[bytes, bytes]], bytes]]:
    """Parse what the server sent, as a client would (h11 client side)."""
    client = h11.Connection(h11.CLIENT)
    out = []
    client.receive_data(data)
    while True:
        # Pretend we sent a request each time, so h11 accepts the next response.
        if client.our_state is h11.IDLE:
            client.send(h11.Request(method="POST", target="/", headers=[("Host", "h")]))
            client.send(h11.EndOfMessage())
        event = client.next_event()
        if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
            return out
        if isinstance(event, h11.Response):
            body = b""
            while True:
                part = client.next_event()
                if isinstance(part, h11.Data):
                    body += part.data
                else:
                    break
            headers = [(k, v) for k, v in event.headers if k != b"date"]
            out.append((event.status_code, headers, body))
            if client.our_state is h11.DONE and client.their_state is h11.DONE:
                client.start_next_cycle()
            else:
                return out


def feed(session: Session, data: bytes, *, byte_by_byte: bool = False) -> bytes:
    if not byte_by_byte:
        return session.receive(data, T0 + 1)
    return b"".join(session.receive(data[i : i + 1], T0 + 1) for i in range(len(data)))


@pytest.fixture(params=[False, True], ids=["whole", "byte-by-byte"])
def bytewise(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def test_a_known_token_gets_204_and_the_connection_stays_open(session, table, bytewise):
    out = feed(session, ping(), byte_by_byte=bytewise)
    assert out.startswith(b"HTTP/1.1 204 No Content\r\n")
    assert b"connection: close" not in out.lower()
    assert not session.closed
    assert table.get(1)["last_seen"] == T0 + 1


def test_head_works_like_post(session, bytewise):
    out = feed(session, ping(method="HEAD"), byte_by_byte=bytewise)
    assert responses(out)[0][0] == 204


def test_query_strings_are_ignored(session, table):
    out = feed(session, ping(token=TOKEN + "?rid=7&x=/y"))
    assert responses(out)[0][0] == 204


@pytest.mark.parametrize(
    "token",
    [OTHER, TOKEN.upper(), TOKEN[:63], TOKEN + "0", "%61" * 21 + "a", "g" * 64, ""],
    ids=["unknown", "uppercase", "short", "long", "percent-encoded", "not-hex", "empty"],
)
def test_every_bad_token_gets_the_same_404(session, responder, token):
    reference = Session(responder, Limits(), T0).receive(ping(OTHER), T0)
    assert feed(session, ping(token)) == reference
    assert responses(reference)[0][0] == 404


def test_a_rotated_or_deleted_token_gets_the_same_404(session, responder, table):
    reference = Session(responder, Limits(), T0).receive(ping(OTHER), T0)
    table.upsert(1, digest("ef" * 32), 60, 0, 1, False, T0)
    assert feed(session, ping(TOKEN)) == reference
    table.remove(1)
    assert feed(session, ping("ef" * 32)) == reference


def test_the_slow_path_sends_the_fast_paths_bytes(session, responder):
    # Expect forces h11; the answer must be byte-identical to the fast path's.
    fast = Session(responder, Limits(), T0).receive(ping(), T0 + 1)
    slow = feed(session, ping(extra="X-Pad: 1\r\nTransfer-Encoding: chunked\r\n") + b"0\r\n\r\n")
    assert slow == fast
    fast404 = Session(responder, Limits(), T0).receive(ping(OTHER), T0 + 1)
    slow404 = Session(responder, Limits(), T0).receive(
        ping(OTHER, extra="Content-Length: 2\r\n") + b"{}", T0 + 1
    )
    assert slow404 == fast404


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "OPTIONS", "PATCH"])
def test_other_methods_get_405_with_allow(session, method):
    [(status, headers, _body)] = responses(feed(session, ping(method=method)))
    assert status == 405
    assert (b"allow", b"POST, HEAD") in headers


def test_other_paths_get_404(session):
    out = feed(session, b"GET /status HTTP/1.1\r\nHost: h\r\n\r\n")
    assert responses(out)[0][0] == 404
    assert not session.closed


def test_pipelined_requests_are_answered_in_order(session, bytewise):
    data = ping() + ping(OTHER) + ping(method="GET") + ping(method="HEAD")
    statuses = [r[0] for r in responses(feed(session, data, byte_by_byte=bytewise))]
    assert statuses == [204, 404, 405, 204]


def test_http_1_0_gets_an_answer_and_a_close(session):
    out = feed(session, f"POST /api/v1/heartbeats/{TOKEN} HTTP/1.0\r\n\r\n".encode())
    assert out.startswith(b"HTTP/1.1 204 ")
    assert session.closed


def test_connection_close_is_honoured(session):
    out = feed(session, ping(extra="Connection: close\r\n") + ping())
    assert out.count(b"HTTP/1.1") == 1
    assert b"Connection: close" in out
    assert session.closed


def test_a_body_up_to_the_limit_is_kept_in_the_history(session, responder):
    body = b"x" * 100_000
    out = feed(session, ping(extra=f"Content-Length: {len(body)}\r\n") + body + ping())
    assert [r[0] for r in responses(out)] == [204, 204]
    (row,) = responder.checkins.history.take().all_rows()  # the body-less ping is no check-in
    assert (row.monitor_id, row.kind, row.body, row.body_bytes) == (1, "success", body, 100_000)


def test_a_larger_body_is_truncated_and_the_ping_counts(session, responder, table):
    body = b"y" * 100_001
    out = feed(session, ping(extra=f"Content-Length: {len(body)}\r\n") + body)
    ((status, headers, _),) = responses(out)
    assert status == 204 and (b"ping-body-limit", b"100000") in headers
    assert not session.closed
    (row,) = responder.checkins.history.take().all_rows()
    assert len(row.body) == 100_000 and row.body_bytes == 100_001
    assert table.get(1)["last_seen"] == T0 + 1


def test_a_larger_chunked_body_is_truncated_too(session, responder):
    chunk = b"30d41\r\n" + b"x" * 200_001 + b"\r\n0\r\n\r\n"
    out = feed(session, ping(extra="Transfer-Encoding: chunked\r\n") + chunk)
    assert responses(out)[0][0] == 204
    (row,) = responder.checkins.history.take().all_rows()
    assert (len(row.body), row.body_bytes) == (100_000, 200_001)


def test_a_body_declared_past_64_mib_gets_413_unread(session):
    out = feed(session, ping(extra=f"Content-Length: {64 * 1024 * 1024 + 1}\r\n"))
    assert responses(out)[0][0] == 413
    assert session.closed


def signal(suffix: str, token: str = TOKEN, method: str = "POST", extra: str = "") -> bytes:
    return ping(f"{token}/{suffix}", method, extra)


RID = "0f8fad5b-d9cb-469f-a165-70867728950e"


@pytest.mark.parametrize(
    ("suffix", "kind", "status"),
    [("start", "start", -1), ("fail", "fail", -1), ("3", "fail", 3), ("255", "fail", 255),
     ("0", "success", 0), ("log", "log", -1)],
)  # fmt: skip
@pytest.mark.parametrize("query", ["", f"?rid={RID}"], ids=["fast path", "with a run id"])
def test_signals_are_answered_and_recorded(
    session, responder, table, suffix, kind, status, query, bytewise
):
    agent = "User-Agent: cron/1.0\r\n"
    out = feed(session, signal(suffix + query, extra=agent), byte_by_byte=bytewise)
    ((code, headers, _),) = responses(out)
    assert code == 204 and (b"ping-body-limit", b"100000") in headers
    # Without a query the native fast path answers it, with one h11 does.
    assert responder.fast.answered_204 == (0 if query else 1)
    (row,) = responder.checkins.history.take().all_rows()
    assert (row.monitor_id, row.kind, row.status, row.user_agent) == (1, kind, status, "cron/1.0")
    assert (row.method, row.body, row.body_bytes) == ("POST", None, 0)
    assert row.rid == (RID if query else None)
    state = table.get(1)["state"]
    assert state == {"fail": "down", "success": "up"}.get(kind, "pending")


@pytest.mark.parametrize("query", ["", f"?rid={RID}"], ids=["fast path", "with a run id"])
def test_the_client_is_the_peer_or_what_a_trusted_proxy_says(responder, query):
    forwarded = "X-Forwarded-For: 203.0.113.9, 198.51.100.7\r\n"
    direct = Session(responder, Limits(), T0, client="192.0.2.1")
    proxy = Session(responder, Limits(), T0, client="127.0.0.1", proxied=True)
    feed(direct, signal("log" + query, extra=forwarded))
    feed(proxy, signal("log" + query, extra=forwarded))
    rows = responder.checkins.history.take().all_rows()
    assert [r.client for r in rows] == ["192.0.2.1", "198.51.100.7"]


def test_a_failure_opens_the_incident_at_once_with_its_exit_status(session, table):
    feed(session, ping() + signal("7"))
    assert [(e.kind, e.status) for e in table.take_events()] == [
        ("up", -1), ("failed", 7), ("incident_opened", -1),
    ]  # fmt: skip


def test_a_run_id_is_kept_when_it_is_a_uuid(session, responder):
    feed(session, signal(f"start?rid={RID}") + signal("start?rid=nope"))
    assert [r.rid for r in responder.checkins.history.take().all_rows()] == [RID, None]


@pytest.mark.parametrize(
    "suffix", ["256", "01", "-1", "stop", "start/extra", "", "1000", "Start", "fail/"]
)
def test_what_is_no_signal_is_no_ping(session, responder, suffix):
    out = feed(session, signal(suffix))
    status, _, body = responses(out)[0]
    assert status == 404 and b"no such route" in body
    assert not responder.checkins.history.take().all_rows()


def test_a_signal_of_an_unknown_token_is_404_and_not_recorded(session, responder):
    for token in (OTHER, "not-a-token"):
        out = feed(session, signal("fail", token))
        status, _, body = responses(out)[0]
        assert status == 404 and b"no heartbeat monitor has this token" in body
    assert not responder.checkins.history.take().all_rows()
    assert responder.checkins.unknown + responder.fast.pings_unknown == 2


def test_a_signal_takes_post_or_head_only(session, responder):
    assert responses(feed(session, signal("start", method="GET")))[0][0] == 405
    assert responses(feed(session, signal("start", method="HEAD")))[0][0] == 204


def test_expect_100_continue_gets_100_then_the_answer(session):
    out = feed(session, ping(extra="Content-Length: 3\r\nExpect: 100-continue\r\n"))
    assert out.startswith(b"HTTP/1.1 100 ")
    assert session.phase is Phase.BODY
    out = feed(session, b"abc")
    assert out.startswith(b"HTTP/1.1 204 ")


def test_a_head_over_8_kib_gets_431(session, bytewise):
    data = ping(extra="X-Big: " + "a" * 8200 + "\r\n")
    out = feed(session, data, byte_by_byte=bytewise)
    assert responses(out)[0][0] == 431
    assert session.closed


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"POST /api/v1/heartbeats/x HTTP/1.1\nHost: h\n\n", b"bare LF"),
        (b"POST /api/v1/heartbeats/x HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", b"folding"),
        (b"POST /api/v1/heartbeats/x HTTP/1.1\r\nHost: h\x00\r\n\r\n", b"control"),
        (b"POST /api/v1/heartbeats/x HTTP/1.1\r\nHost: a\rb\r\n\r\n", b"bare CR"),
        (
            b"POST /api/v1/heartbeats/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Length: 3\r\n\r\n0\r\n\r\n",
            b"both Transfer-Encoding and Content-Length",
        ),
    ],
    ids=["bare-lf", "obs-fold", "nul", "cr", "te-and-cl"],
)
def test_heads_h11_would_tolerate_are_refused_here(session, data, why):
    [(status, _h, body)] = responses(feed(session, data))
    assert status == 400
    assert why in body
    assert session.closed


@pytest.mark.parametrize(
    "data",
    [
        b"POST /api/v1/heartbeats/x HTTP/1.1\r\n\r\n",  # no Host
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET /\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    ],
    ids=["no-host", "two-lengths", "gzip-chunked", "bad-chunk", "h2-preface", "http09", "tls"],
)
def test_malformed_requests_get_a_4xx_and_a_close(session, data):
    out = feed(session, data)
    [(status, _h, _b)] = responses(out)
    assert 400 <= status < 500
    assert session.closed


def test_the_request_limit_closes_the_connection_on_the_last_answer(responder):
    session = Session(responder, Limits(max_requests_per_connection=3), T0)
    out = feed(session, ping() * 5)
    assert out.count(b"HTTP/1.1 204") == 3
    assert out.endswith(b"Connection: close\r\n\r\n")
    assert session.closed


def test_the_request_limit_also_counts_slow_path_requests(responder):
    session = Session(responder, Limits(max_requests_per_connection=2), T0)
    out = feed(session, ping(method="GET") * 3)
    assert [r[0] for r in responses(out)] == [405, 405]
    assert session.closed


def test_deadlines_follow_the_phase(session):
    limits = Limits()
    assert session.deadline() == T0 + limits.head_timeout
    session.receive(ping()[:10], T0 + 1)
    assert session.phase is Phase.HEAD
    assert session.deadline() == T0 + 1 + limits.head_timeout
    session.receive(ping()[10:], T0 + 2)
    assert session.deadline() == T0 + 2 + limits.keepalive_timeout
    session.receive(ping(extra="Content-Length: 5\r\n"), T0 + 3)
    assert session.phase is Phase.BODY
    assert session.deadline() == T0 + 3 + limits.body_timeout


def test_a_timeout_mid_request_answers_408(session):
    session.receive(ping()[:10], T0)
    assert responses(session.timed_out())[0][0] == 408
    assert session.closed


def test_a_timeout_while_idle_closes_silently(session):
    session.receive(ping(), T0)
    assert session.timed_out() == b""
    assert session.closed


def test_nothing_after_close_is_parsed(session):
    assert feed(session, ping(extra="Connection: close\r\n")).count(b"HTTP/1.1") == 1
    assert feed(session, ping()) == b""


def test_a_request_smuggled_in_a_body_is_not_answered(session, table):
    smuggled = ping(OTHER)
    data = ping(extra=f"Content-Length: {len(smuggled)}\r\n") + smuggled
    assert [r[0] for r in responses(feed(session, data))] == [204]


def test_plain_pings_go_to_the_history_only_when_asked(session, responder, table):
    feed(session, ping())
    assert (
        not responder.checkins.history.take().all_rows()
    )  # by default: lastSeenAt is their record
    responder.fast.record_plain = True  # LASTSEEN_PING_HISTORY_PLAIN
    chunked = ping(extra="Transfer-Encoding: chunked\r\n") + b"0\r\n\r\n"  # h11's
    out = feed(session, ping(extra="User-Agent: curl/8\r\n") + chunked + ping(OTHER))
    assert [r[0] for r in responses(out)] == [204, 204, 404]
    rows = responder.checkins.history.take().all_rows()
    assert [(r.monitor_id, r.kind, r.status, r.user_agent) for r in rows] == [
        (1, "success", -1, "curl/8"), (1, "success", -1, None),
    ]  # fmt: skip
    assert responder.fast.pings_ok == 2 and table.get(1)["state"] == "up"
