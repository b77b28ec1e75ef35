"""Hand-offs between ingest processes: the body is authenticated with the cluster's key,
a tampered, truncated or foreign body is refused, and the admin listener takes them on a
kept-alive connection and answers 204 (403 when refused)."""

from __future__ import annotations

import secrets

import h11
import pytest
import trio

from core import DeadlineTable
from core._deadline import START
from core.shards import shard_of
from core.tokens import digest
from ingest.clock import Clock
from ingest.handoff import Outbox, Received, Signal, decode, encode
from ingest.metrics import serve_admin

KEY = secrets.token_bytes(32)


def columns(received: Received) -> list[list[float]]:
    return [list(column) for column in received]


def test_a_body_round_trips_and_any_change_is_refused():
    ids, times = [1, 2, 2**40], [1.5, 1_700_000_000.25, 3.0]
    failures = [Signal(9, 2, 4.5, 3), Signal(9, 2, 5.5, -1)]
    body = encode(KEY, ids, times, failures)
    assert columns(decode(KEY, body)) == [ids, times, [2, 2], [4.5, 5.5], [3, -1]]
    assert columns(decode(KEY, encode(KEY, [], []))) == [[], [], [], [], []]
    with pytest.raises(ValueError):
        decode(secrets.token_bytes(32), body)  # another cluster's key
    for i in (0, 31, 32, 40, len(body) - 1):  # the MAC, the count, an id, a status
        tampered = bytearray(body)
        tampered[i] ^= 1
        with pytest.raises(ValueError):
            decode(KEY, bytes(tampered))
    with pytest.raises(ValueError):
        decode(KEY, body[:-8])
    with pytest.raises(ValueError):
        decode(KEY, b"")


def _table_with(monitor_id: int, token: str, *, owned: bool) -> DeadlineTable:
    table = DeadlineTable()
    d = digest(token)
    if not owned:
        table.release([shard_of(d)])
    table.upsert(monitor_id, d, 30, 0, 1, False, 100.0)
    return table


class _FixedClock(Clock):
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


def test_the_owner_records_a_handed_off_ping_and_a_replay_changes_nothing():
    table = _table_with(7, "ab" * 32, owned=True)
    outbox = Outbox("127.0.0.1:1", KEY, lambda: table, _FixedClock(200.0))
    assert outbox.receive(encode(KEY, [7], [150.0]))
    assert table.get(7)["last_seen"] == 150.0 and table.get(7)["state"] == "up"
    events = table.take_events()
    assert outbox.receive(encode(KEY, [7], [150.0]))  # replayed: nothing new
    assert table.take_events() == [] and events == [(7, "up", 150.0, 150.0, -1)]
    # A time in this process's future (another host's clock) is recorded as now.
    assert outbox.receive(encode(KEY, [7], [900.0]))
    assert table.get(7)["last_seen"] == 200.0
    assert not outbox.receive(encode(secrets.token_bytes(32), [7], [199.0]))
    assert outbox.counts.received == 3 and outbox.counts.refused == 1


def test_a_hand_off_for_a_shard_owned_elsewhere_now_is_relayed():
    table = _table_with(7, "ab" * 32, owned=False)
    outbox = Outbox("127.0.0.1:1", KEY, lambda: table, _FixedClock(200.0))
    assert outbox.receive(encode(KEY, [7], [150.0]))
    assert outbox.counts.relayed == 1
    assert table.take_handoffs() == ([shard_of(digest("ab" * 32))], [7], [150.0])


async def _post(stream: trio.SocketStream, conn: h11.Connection, body: bytes) -> int:
    headers = [("Host", "x"), ("Content-Length", str(len(body)))]
    out = conn.send(h11.Request(method="POST", target="/handoff", headers=headers)) or b""
    out += (conn.send(h11.Data(data=body)) or b"") + (conn.send(h11.EndOfMessage()) or b"")
    await stream.send_all(out)
    status = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(4096))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.EndOfMessage):
            return status


def test_the_admin_listener_takes_hand_offs_on_one_kept_alive_connection():
    received: list[bytes] = []

    def handoff(body: bytes) -> bool:
        received.append(body)
        return body.startswith(b"ok")

    async def go() -> list[int]:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                serve_admin, "127.0.0.1", 0, lambda: "", lambda: (True, {}), handoff
            )
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            conn = h11.Connection(h11.CLIENT)
            statuses = []
            for body in (b"ok 1", b"bad", b"ok 2"):
                statuses.append(await _post(stream, conn, body))
                conn.start_next_cycle()
            await stream.aclose()
            nursery.cancel_scope.cancel()
        return statuses

    assert trio.run(go) == [204, 403, 204]
    assert received == [b"ok 1", b"bad", b"ok 2"]


def test_handed_off_failures_open_the_incident_in_the_order_they_were_answered():
    """Every failure goes over, not only the latest; a ping and a failure sent in one
    body are recorded by time, so a success after a failure recovers it."""
    table = _table_with(7, "ab" * 32, owned=True)
    outbox = Outbox("127.0.0.1:1", KEY, lambda: table, _FixedClock(200.0))
    shard = shard_of(digest("ab" * 32))
    assert outbox.receive(encode(KEY, [7], [160.0], [Signal(shard, 7, 150.0, 3)]))
    assert [(e.kind, e.at, e.status) for e in table.take_events()] == [
        ("failed", 150.0, 3), ("incident_opened", 150.0, -1),
        ("recovered", 160.0, -1), ("incident_resolved", 160.0, -1),
    ]  # fmt: skip
    assert outbox.receive(encode(KEY, [], [], [Signal(shard, 7, 150.0, 3)]))  # replayed
    assert table.take_events() == [] and table.get(7)["state"] == "up"


def test_a_foreign_failure_waits_in_the_outbox_for_its_owner():
    table = _table_with(7, "ab" * 32, owned=False)
    outbox = Outbox("127.0.0.1:1", KEY, lambda: table, _FixedClock(200.0))
    shard = shard_of(digest("ab" * 32))
    assert table.fail(digest("ab" * 32), 190.0, 4)
    outbox.owners = {shard: "127.0.0.1:2"}
    outbox._collect()
    batches = outbox._route()
    assert list(batches) == ["127.0.0.1:2"]
    assert batches["127.0.0.1:2"].signals == [Signal(shard, 7, 190.0, 4)]
    assert not batches["127.0.0.1:2"].pings  # a failure is not a success ping


def test_a_handed_off_start_sets_the_run_deadline_of_a_monitor_with_a_max_runtime():
    d = digest("ab" * 32)
    owner = DeadlineTable()
    owner.upsert(7, d, 3600, 0, 1, False, 100.0, max_runtime=30)
    other = DeadlineTable()
    other.release([shard_of(d)])
    other.upsert(7, d, 3600, 0, 1, False, 100.0, max_runtime=30)
    assert other.start(d, 150.0)  # answered by the process that does not own it
    (shards, ids, times, codes) = other.take_signals()
    assert (ids, times, codes) == ([7], [150.0], [START])
    outbox = Outbox("127.0.0.1:1", KEY, lambda: owner, _FixedClock(200.0))
    assert outbox.receive(encode(KEY, [], [], [Signal(shards[0], 7, 150.0, START)]))
    assert owner.get(7)["started"] == 150.0 and owner.get(7)["deadline"] == 180.0
    owner.pop_due(180.0)
    assert [e.kind for e in owner.take_events()] == ["timed_out", "incident_opened"]
    # Without a max_runtime, a start is nobody's business: nothing goes over.
    other.upsert(7, d, 3600, 0, 1, False, 100.0)
    assert other.start(d, 160.0) and other.take_signals() == ([], [], [], [])


def test_a_hand_off_of_a_monitor_not_loaded_yet_waits_for_it():
    """The answering process knew a new monitor before its owner did (the change feed
    reaches processes a moment apart): its failure was dropped as "relayed", and the
    incident never opened. It now waits until the monitor is loaded, up to
    STALE_SECONDS; then it is dropped and counted."""
    table = DeadlineTable()
    clock = _FixedClock(200.0)
    outbox = Outbox("127.0.0.1:1", KEY, lambda: table, clock)
    shard = shard_of(digest("ab" * 32))
    assert outbox.receive(encode(KEY, [7], [195.0], [Signal(shard, 7, 196.0, 2)]))
    assert outbox.receive(encode(KEY, [], [], [Signal(shard, 8, 197.0, 1)]))  # never comes
    assert table.take_events() == [] and outbox.counts.relayed == 0
    outbox.retry_early()
    assert len(outbox.early) == 3  # nothing loaded yet
    table.upsert(7, digest("ab" * 32), 60, 0, 1, False, 100.0)  # the change feed
    outbox.retry_early()
    assert [(e.kind, e.at, e.status) for e in table.take_events()] == [
        ("up", 195.0, -1), ("failed", 196.0, 2), ("incident_opened", 196.0, -1),
    ]  # fmt: skip
    assert outbox.counts.received == 2 and len(outbox.early) == 1
    clock._now = 197.0 + 30.5
    outbox.retry_early()
    assert outbox.early == [] and outbox.counts.dropped == 1


def test_a_batch_of_pings_alone_is_recorded_at_once_and_waits_for_the_unloaded():
    """The usual hand-off (pings, no signal) goes to the table in one call
    (DeadlineTable.seen_many): as the one-by-one path, a monitor not loaded yet waits,
    and a time in this process's future is recorded as now."""
    table = _table_with(7, "ab" * 32, owned=True)
    outbox = Outbox("127.0.0.1:1", KEY, lambda: table, _FixedClock(200.0))
    assert outbox.receive(encode(KEY, [7, 9], [150.0, 900.0]))
    assert table.get(7)["last_seen"] == 150.0 and outbox.counts.received == 1
    assert outbox.early == [(200.0, 9, None)]  # 9: created a moment ago, not loaded yet
    table.upsert(9, digest("cd" * 32), 60, 0, 1, False, 100.0)  # the change feed
    outbox.retry_early()
    assert table.get(9)["last_seen"] == 200.0 and table.get(9)["state"] == "up"
    assert outbox.early == [] and outbox.counts.received == 2
