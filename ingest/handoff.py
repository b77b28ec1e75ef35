"""Hand-offs: pings one ingest process answered for monitors another process owns.

Every process holds every monitor's digest, so it answers any ping exactly (204 or 404)
whichever process the kernel or the load balancer picked. A ping of a monitor whose shard
it does not own (a *foreign* monitor, ``core/_deadline.pyx``) records last_seen and
queues a hand-off; every ``INTERVAL`` (50 ms) the outbox takes them and sends each owner its
batch: ``POST /handoff`` on the owner's admin listener (an owner is named by that
address, ``leases.py``), on a kept-alive connection per owner. The body is the monitors'
ids and last pings, authenticated with the cluster's key (migration 0010). The owner
records each like a ping at the time it was answered (``DeadlineTable.seen``), so its
deadlines are those of a single process, hand-off latency aside (milliseconds; the
owner's deadlines wait ``SLACK`` more for it when it has peers).

What cannot be sent yet (owner unknown or unreachable) is kept and retried, the latest
ping per monitor, for ``STALE_SECONDS``; older ones are dropped and counted: by then the
shard has a new owner, whose takeover amnesty starts later than those pings. An owner
that receives a hand-off for a monitor it no longer owns relays it (``seen`` queues it
again), so a hand-off sent on a stale map still arrives. A replayed body changes
nothing: a ping no later than the last one known is ignored.
"""

from __future__ import annotations

import hmac
import logging
import struct
from array import array
from collections.abc import Callable
from dataclasses import dataclass

import h11
import trio
from blake3 import blake3

from core import DeadlineTable

from .clock import Clock

log = logging.getLogger(__name__)

INTERVAL = 0.05  # seconds between batches (a request each: see benchmarks/procs.py)
SLACK = 0.25  # how much longer an owner with peers waits at a deadline, for hand-offs
STALE_SECONDS = 30.0
REUSE_SECONDS = 5.0  # a connection idle longer is made anew (the owner closes at 10 s)
MAX_BATCH = 50_000  # monitors per request (800 KB)
MAX_BODY = 32 + 4 + 16 * MAX_BATCH
PATH = b"/handoff"
_COUNT = struct.Struct("<I")


def encode(key: bytes, ids: list[int], times: list[float]) -> bytes:
    payload = _COUNT.pack(len(ids)) + array("q", ids).tobytes() + array("d", times).tobytes()
    return blake3(payload, key=key).digest() + payload


def decode(key: bytes, body: bytes) -> tuple[list[int], list[float]]:
    """The ids and times of a body made by encode() with `key`; ValueError otherwise."""
    mac, payload = body[:32], body[32:]
    if len(payload) < _COUNT.size or not hmac.compare_digest(
        mac, blake3(payload, key=key).digest()
    ):
        raise ValueError("not a hand-off of this cluster")
    (n,) = _COUNT.unpack_from(payload)
    if len(payload) != _COUNT.size + 16 * n:
        raise ValueError("truncated hand-off")
    ids, times = array("q"), array("d")
    ids.frombytes(payload[4 : 4 + 8 * n])
    times.frombytes(payload[4 + 8 * n :])
    return ids.tolist(), times.tolist()


@dataclass
class Counts:
    sent: int = 0  # monitors handed to another process
    received: int = 0  # monitors handed to this one, and judged here
    relayed: int = 0  # received, but owned elsewhere now: handed on
    dropped: int = 0  # kept past STALE_SECONDS without an owner to take them
    refused: int = 0  # bodies that failed authentication
    send_failures: int = 0


class Outbox:
    """The hand-offs of one process: what is waiting, who owns what, the connections."""

    def __init__(self, me: str, key: bytes, table: Callable[[], DeadlineTable], clock: Clock):
        self.me = me
        self.key = key
        self._table = table
        self._clock = clock
        self._owners: dict[int, str] = {}  # shard -> owner (admin address), from the leases
        self._has_peers = False
        self.waiting: dict[int, tuple[int, float]] = {}  # monitor id -> (shard, last ping)
        self.counts = Counts()
        self._peers: dict[str, _Peer] = {}

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
        """A hand-off body from a peer: record its pings; False if not authentic."""
        try:
            ids, times = decode(self.key, body)
        except ValueError:
            self.counts.refused += 1
            return False
        table = self._table()
        now = self._clock.now()
        for monitor_id, at in zip(ids, times, strict=True):
            # Another host's clock may run ahead: never record a ping in our future.
            if table.seen(monitor_id, min(at, now)):
                self.counts.received += 1
            else:
                self.counts.relayed += 1
        return True

    async def run(self) -> None:
        """Send what is waiting every INTERVAL, until cancelled."""
        async with trio.open_nursery() as nursery:
            while True:
                await trio.sleep(INTERVAL)
                self._collect()
                for owner, batch in self._route().items():
                    peer = self._peers.get(owner)
                    if peer is None:
                        peer = self._peers[owner] = _Peer(owner, self)
                        nursery.start_soon(peer.run)
                    peer.add(batch)

    def _collect(self) -> None:
        shards, ids, times = self._table().take_handoffs()
        waiting = self.waiting
        for shard, monitor_id, at in zip(shards, ids, times, strict=True):
            waiting[monitor_id] = (shard, at)

    def _route(self) -> dict[str, dict[int, tuple[int, float]]]:
        """Take what can go now, grouped by owner; keep the rest, drop the stale."""
        if not self.waiting:
            return {}
        table = self._table()
        stale = self._clock.now() - STALE_SECONDS
        batches: dict[str, dict[int, tuple[int, float]]] = {}
        kept: dict[int, tuple[int, float]] = {}
        for monitor_id, (shard, at) in self.waiting.items():
            owner = self.owners.get(shard)
            if owner == self.me and table.seen(monitor_id, at):
                continue  # taken over meanwhile: recorded here
            if owner is None or owner == self.me:
                if at < stale:
                    self.counts.dropped += 1
                else:
                    kept[monitor_id] = (shard, at)
                continue
            batches.setdefault(owner, {})[monitor_id] = (shard, at)
        self.waiting = kept
        return batches

    def give_back(self, batch: dict[int, tuple[int, float]]) -> None:
        """A batch that could not be sent: wait again (unless a later ping is waiting)."""
        for monitor_id, (shard, at) in batch.items():
            if monitor_id not in self.waiting or self.waiting[monitor_id][1] < at:
                self.waiting[monitor_id] = (shard, at)


class _Peer:
    """One owner's kept-alive connection; batches merge while a send is in flight."""

    def __init__(self, owner: str, outbox: Outbox) -> None:
        self.owner = owner
        self.outbox = outbox
        self.batch: dict[int, tuple[int, float]] = {}
        self.sending = False
        self._ready = trio.Event()

    @property
    def busy(self) -> bool:
        return self.sending or bool(self.batch)

    def add(self, batch: dict[int, tuple[int, float]]) -> None:
        self.batch.update(batch)
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
            batch, self.batch = self.batch, {}
            items = list(batch.items())
            self.sending = True
            try:
                if stream is None:
                    with trio.fail_after(2):
                        stream = await trio.open_tcp_stream(host.strip("[]"), int(port))
                    conn = h11.Connection(h11.CLIENT)
                for start in range(0, len(items), MAX_BATCH):
                    part = items[start : start + MAX_BATCH]
                    body = encode(
                        self.outbox.key, [i for i, _ in part], [at for _, (_, at) in part]
                    )
                    with trio.fail_after(2):
                        await _post(stream, conn, self.owner, body)
                    conn.start_next_cycle()
                self.outbox.counts.sent += len(items)
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
