"""Hand-offs: pings one ingest process answered for monitors another process owns.

Every process holds every monitor's digest, so it answers any ping exactly (204 or 404)
whichever process the kernel or the load balancer picked. A ping of a monitor whose shard
it does not own (a *foreign* monitor, ``core/_deadline.pyx``) records last_seen and
queues a hand-off; every ``INTERVAL`` (50 ms) the outbox takes them and sends each owner its
batch: ``POST /handoff`` on the owner's admin listener (an owner is named by that
address, ``leases.py``), on a kept-alive connection per owner. The body is the monitors'
ids and last pings, then the failure signals (``/fail``, a non-zero exit status: every
one, not only the latest, each with its time and exit status), authenticated with the
cluster's key (migration 0010). The owner records them in time order, each like a ping
or a failure at the time it was answered (``DeadlineTable.seen``, ``failed``), so its
deadlines are those of a single process, hand-off latency aside (milliseconds; the
owner's deadlines wait ``SLACK`` more for it when it has peers).

What cannot be sent yet (owner unknown or unreachable) is kept and retried, the latest
ping per monitor, for ``STALE_SECONDS``; older ones are dropped and counted: by then the
shard has a new owner, whose takeover amnesty starts later than those pings. An owner
that receives a hand-off for a monitor it no longer owns relays it (``seen`` queues it
again), so a hand-off sent on a stale map still arrives. One that names a monitor the
owner has not loaded yet (just created: the change feed brings it a moment later than
the answering process got it) waits for it, up to ``STALE_SECONDS``: a failure of a job
created a second ago still opens its incident. A replayed body changes nothing: a ping
no later than the last one known is ignored.
"""

from __future__ import annotations

import hmac
import logging
import struct
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import NamedTuple

import h11
import trio
from blake3 import blake3

from core import DeadlineTable
from core._deadline import START

from .clock import Clock

log = logging.getLogger(__name__)

INTERVAL = 0.05  # seconds between batches (a request each: see benchmarks/procs.py)
SLACK = 0.25  # how much longer an owner with peers waits at a deadline, for hand-offs
STALE_SECONDS = 30.0
REUSE_SECONDS = 5.0  # a connection idle longer is made anew (the owner closes at 10 s)
MAX_BATCH = 50_000  # monitors per request (800 KB)
MAX_BODY = 32 + 8 + 18 * MAX_BATCH
PATH = b"/handoff"
_COUNT = struct.Struct("<I")


class Signal(NamedTuple):
    """A failure or a start answered for a foreign monitor: who, when, and which (the
    failure's exit status, -1 for a plain /fail, or START)."""

    shard: int
    monitor_id: int
    at: float
    code: int


def encode(
    key: bytes, ids: list[int], times: list[float], signals: list[Signal] | None = None
) -> bytes:
    signals = signals or []
    payload = b"".join([
        _COUNT.pack(len(ids)), array("q", ids).tobytes(), array("d", times).tobytes(),
        _COUNT.pack(len(signals)),
        array("q", [f.monitor_id for f in signals]).tobytes(),
        array("d", [f.at for f in signals]).tobytes(),
        array("h", [f.code for f in signals]).tobytes(),
    ])  # fmt: skip
    return blake3(payload, key=key).digest() + payload


class Received(NamedTuple):
    """A decoded hand-off: pings (ids, times) and signals (ids, times, codes), each a
    view of the body's array (no Python object per entry until one is read)."""

    ids: Sequence[int]
    times: Sequence[float]
    signal_ids: Sequence[int]
    signal_times: Sequence[float]
    codes: Sequence[int]


def decode(key: bytes, body: bytes) -> Received:
    """What a body made by encode() with `key` holds; ValueError otherwise."""
    mac, payload = body[:32], body[32:]
    if len(payload) < 2 * _COUNT.size or not hmac.compare_digest(
        mac, blake3(payload, key=key).digest()
    ):
        raise ValueError("not a hand-off of this cluster")
    (n,) = _COUNT.unpack_from(payload)
    signals = _COUNT.size + 16 * n  # where the signals' count is
    if len(payload) < signals + _COUNT.size:
        raise ValueError("truncated hand-off")
    (k,) = _COUNT.unpack_from(payload, signals)
    if len(payload) != signals + _COUNT.size + 18 * k:
        raise ValueError("truncated hand-off")
    view = memoryview(payload)
    f = signals + _COUNT.size
    return Received(
        view[4 : 4 + 8 * n].cast("q"), view[4 + 8 * n : signals].cast("d"),
        view[f : f + 8 * k].cast("q"), view[f + 8 * k : f + 16 * k].cast("d"),
        view[f + 16 * k :].cast("h"),
    )  # fmt: skip


@dataclass
class Counts:
    sent: int = 0  # monitors handed to another process
    received: int = 0  # monitors handed to this one, and judged here
    relayed: int = 0  # received, but owned elsewhere now: handed on
    dropped: int = 0  # kept past STALE_SECONDS without an owner to take them
    refused: int = 0  # bodies that failed authentication
    send_failures: int = 0


@dataclass
class Batch:
    """What waits for, or goes to, one owner: the latest ping per monitor, and every
    failure and start in the order they were answered."""

    pings: dict[int, tuple[int, float]] = field(default_factory=dict)  # id -> (shard, at)
    signals: list[Signal] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.pings or self.signals)

    def __len__(self) -> int:
        return len(self.pings) + len(self.signals)

    def add(self, other: Batch) -> None:
        """Merge `other` in (it is not used after): a later ping wins, every signal is
        kept."""
        if not self.pings:  # the usual case: nothing was waiting
            self.pings = other.pings
            self.signals.extend(other.signals)
            return
        for monitor_id, (shard, at) in other.pings.items():
            if monitor_id not in self.pings or self.pings[monitor_id][1] < at:
                self.pings[monitor_id] = (shard, at)
        self.signals.extend(other.signals)


class Outbox:
    """The hand-offs of one process: what is waiting, who owns what, the connections."""

    def __init__(self, me: str, key: bytes, table: Callable[[], DeadlineTable], clock: Clock):
        self.me = me
        self.key = key
        self._table = table
        self._clock = clock
        self._owners: dict[int, str] = {}  # shard -> owner (admin address), from the leases
        self._has_peers = False
        self.waiting = Batch()
        self.counts = Counts()
        self._peers: dict[str, _Peer] = {}
        # Hand-offs of monitors this process has not loaded yet (the change feed brings a
        # new one a moment later than the process that answered its first pings got it):
        # (time, id, code or None for a ping), applied once it is, dropped after
        # STALE_SECONDS. A failure signal of a monitor just created must not be lost.
        self.early: list[tuple[float, int, int | None]] = []

    def idle(self) -> bool:
        """Nothing waiting, nothing being sent (what can go is given to its peer now)."""
        self._collect()
        for owner, batch in self._route().items():
            peer = self._peers.get(owner)
            if peer is not None:
                peer.add(batch)
            else:
                self.give_back(batch)  # the run loop starts its peer
        return not self.waiting and not any(p.busy for p in self._peers.values())

    @property
    def owners(self) -> dict[int, str]:
        return self._owners

    @owners.setter
    def owners(self, owners: dict[int, str]) -> None:
        self._owners = owners
        self._has_peers = any(owner != self.me for owner in owners.values())

    @property
    def has_peers(self) -> bool:
        """Another process owns shards (read by the scheduler at every wake: kept)."""
        return self._has_peers

    def receive(self, body: bytes) -> bool:
        """A hand-off body from a peer: record its pings, failures and starts in the
        order they were answered; False if not authentic."""
        try:
            got = decode(self.key, body)
        except ValueError:
            self.counts.refused += 1
            return False
        table = self._table()
        now = self._clock.now()
        # Another host's clock may run ahead: never record a ping in our future.
        if not got.signal_ids:  # pings alone (the usual batch): one call for them all
            received, relayed, unknown = table.seen_many(got.ids, got.times, now)
            self.counts.received += received
            self.counts.relayed += relayed
            for i in unknown:  # not loaded here yet: kept for a moment
                self.early.append((min(got.times[i], now), got.ids[i], None))
            return True
        # (time, id, the signal's code or None for a success ping), in time order.
        signals: list[tuple[float, int, int | None]] = [
            (at, monitor_id, None) for monitor_id, at in zip(got.ids, got.times, strict=True)
        ]
        signals += zip(got.signal_times, got.signal_ids, got.codes, strict=True)
        signals.sort(key=lambda signal: signal[0])
        for at, monitor_id, code in signals:
            self._record(table, min(at, now), monitor_id, code)
        return True

    def _record(self, table: DeadlineTable, at: float, monitor_id: int, code: int | None) -> None:
        if table.shard(monitor_id) is None:  # not loaded here yet: kept for a moment
            self.early.append((at, monitor_id, code))
            return
        ok = table.seen(monitor_id, at) if code is None else _apply(table, monitor_id, at, code)
        if ok:
            self.counts.received += 1
        else:
            self.counts.relayed += 1

    def retry_early(self) -> None:
        """Apply the hand-offs of monitors loaded since they came; drop the stale."""
        if not self.early:
            return
        table, stale = self._table(), self._clock.now() - STALE_SECONDS
        early, self.early = self.early, []
        for at, monitor_id, code in early:
            if table.shard(monitor_id) is not None:
                self._record(table, at, monitor_id, code)
            elif at < stale:
                self.counts.dropped += 1  # deleted meanwhile, or never ours to know
            else:
                self.early.append((at, monitor_id, code))

    async def run(self) -> None:
        """Send what is waiting every INTERVAL, until cancelled."""
        async with trio.open_nursery() as nursery:
            while True:
                await trio.sleep(INTERVAL)
                self.retry_early()
                self._collect()
                for owner, batch in self._route().items():
                    peer = self._peers.get(owner)
                    if peer is None:
                        peer = self._peers[owner] = _Peer(owner, self)
                        nursery.start_soon(peer.run)
                    peer.add(batch)

    def _collect(self) -> None:
        table = self._table()
        shards, ids, times = table.take_handoffs()
        self.waiting.pings.update(zip(ids, zip(shards, times, strict=True), strict=True))
        self.waiting.signals.extend(map(Signal, *table.take_signals()))

    def _route(self) -> dict[str, Batch]:
        """Take what can go now, grouped by owner; keep the rest, drop the stale."""
        if not self.waiting:
            return {}
        table = self._table()
        stale = self._clock.now() - STALE_SECONDS
        batches: dict[str, Batch] = {}
        kept = Batch()
        owners, me = self._owners, self.me
        for monitor_id, entry in self.waiting.pings.items():
            owner = owners.get(entry[0])
            if owner is not None and owner != me:  # the usual case: to its owner
                batch = batches.get(owner)
                if batch is None:
                    batch = batches[owner] = Batch()
                batch.pings[monitor_id] = entry
                continue
            at = entry[1]  # its owner unknown, or this process
            if owner == me and table.seen(monitor_id, at):
                continue  # taken over meanwhile: recorded here
            if at < stale:
                self.counts.dropped += 1
            else:
                kept.pings[monitor_id] = entry
        for signal in self.waiting.signals:
            owner = self.owners.get(signal.shard)
            if owner == self.me and _apply(table, signal.monitor_id, signal.at, signal.code):
                continue
            if owner is None or owner == self.me:
                if signal.at < stale:
                    self.counts.dropped += 1
                else:
                    kept.signals.append(signal)
                continue
            batches.setdefault(owner, Batch()).signals.append(signal)
        self.waiting = kept
        return batches

    def give_back(self, batch: Batch) -> None:
        """A batch that could not be sent: wait again (unless a later ping is waiting)."""
        self.waiting.add(batch)


def _apply(table: DeadlineTable, monitor_id: int, at: float, code: int) -> bool:
    """A handed-off signal (``Signal.code``): True if judged here, False if relayed."""
    if code == START:
        return table.started(monitor_id, at)
    return table.failed(monitor_id, at, code)


class _Peer:
    """One owner's kept-alive connection; batches merge while a send is in flight."""

    def __init__(self, owner: str, outbox: Outbox) -> None:
        self.owner = owner
        self.outbox = outbox
        self.batch = Batch()
        self.sending = False
        self._ready = trio.Event()

    @property
    def busy(self) -> bool:
        return self.sending or bool(self.batch)

    def add(self, batch: Batch) -> None:
        self.batch.add(batch)
        self._ready.set()

    async def run(self) -> None:
        host, _, port = self.owner.rpartition(":")
        backoff = 0.1
        stream: trio.SocketStream | None = None
        conn = h11.Connection(h11.CLIENT)
        last_used = trio.current_time()
        while True:
            await self._ready.wait()
            self._ready = trio.Event()
            if stream is not None and trio.current_time() - last_used > REUSE_SECONDS:
                await stream.aclose()
                stream = None
            batch, self.batch = self.batch, Batch()
            ids = list(batch.pings)
            times = list(map(itemgetter(1), batch.pings.values()))
            signals = batch.signals
            self.sending = True
            try:
                if stream is None:
                    with trio.fail_after(2):
                        stream = await trio.open_tcp_stream(host.strip("[]"), int(port))
                    conn = h11.Connection(h11.CLIENT)
                for start in range(0, max(len(ids), len(signals)), MAX_BATCH):
                    end = start + MAX_BATCH
                    body = encode(
                        self.outbox.key, ids[start:end], times[start:end], signals[start:end]
                    )
                    with trio.fail_after(2):
                        await _post(stream, conn, self.owner, body)
                    conn.start_next_cycle()
                self.outbox.counts.sent += len(batch)
                self.sending = False
                last_used = trio.current_time()
                backoff = 0.1
            except (OSError, trio.TooSlowError, h11.ProtocolError, trio.BrokenResourceError) as exc:
                self.outbox.counts.send_failures += 1
                log.warning("hand-off to %s failed (%s); kept", self.owner, type(exc).__name__)
                if stream is not None:
                    await stream.aclose()
                stream = None
                self.outbox.give_back(batch)
                self.sending = False
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)


async def _post(stream: trio.SocketStream, conn: h11.Connection, host: str, body: bytes) -> None:
    headers = [
        ("Host", host),
        ("Content-Type", "application/octet-stream"),
        ("Content-Length", str(len(body))),
    ]
    data = conn.send(h11.Request(method="POST", target=PATH, headers=headers)) or b""
    data += conn.send(h11.Data(data=body)) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)
    status = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            chunk = await stream.receive_some(4096)
            if not chunk:
                raise trio.BrokenResourceError("peer closed")
            conn.receive_data(chunk)
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.EndOfMessage):
            break
        elif isinstance(event, h11.ConnectionClosed):
            raise trio.BrokenResourceError("peer closed")
    if status != 204:
        raise h11.LocalProtocolError(f"hand-off answered {status}")
