"""The ingest's TCP listener: accept, per-connection deadlines, graceful stop.

How this works
--------------
Plain non-blocking sockets on trio's I/O waits (the stream layer costs a quarter of a
ping), one task per connection.
Deadlines are lazy, like the monitors' own: no connection touches a timer per request.
The sans-IO session (``protocol.Session``) knows what it waits for and until when (the
rest of a head, a body, the next request; a send has its own deadline). One reaper task
keeps a heap of (deadline, connection); when an entry comes due it asks the connection
for its real deadline, pushes it again if it moved, and otherwise cancels the
connection's scope. Each connection is re-pushed at most once per timeout period. The
session then says what to send before closing (408, or nothing for an idle connection).
A connection that ends leaves its entry behind until it comes due; once such entries are
most of the heap (and at least ``COMPACT_AT``), the heap is rebuilt without them. Left to
their deadlines, a load of a new connection per request (a cron job's curl) kept about
400,000 of them and their sessions alive, and every full garbage collection walked them
all: pauses of 100-200 ms that were the p99 of such pings.

At most ``Limits.max_connections`` connections are open, and at most
``Limits.max_connections_per_address`` from one client address (trusted proxies, which
carry many clients, are exempt); a connection over its address's share is answered 503
and closed, so one address cannot take the whole cap. At the cap, a new connection takes
the place of one that has the least claim to it: first a request head that has been
arriving for a second or more (a valid ping's head comes whole in a packet or two, so
these are slow clients), the oldest first; else an idle connection (nothing of a request
received; nginx does the same with its keep-alive connections) or a younger partial head,
nearest its deadline; else the oldest one still sending a body. So a flood of idle
connections or of slow heads (one byte each, topped up) cannot lock valid pings out. A
connection whose request is with the control process, or whose answer is being sent, is
never evicted; when every connection is such, the new one is closed at once, so the
backlog never fills. Running out of file descriptors pauses accepting briefly instead of
crashing.

A forwarded request (for the control process) is abandoned when its client closes the
connection before the answer: the upstream connection is closed, not left to finish
work nobody will read.

``stop()`` is graceful: stop accepting, close idle connections, let requests in progress
finish within the grace period, then cancel whatever is left.

Sharing a core: the ingest process gives up its core (``sched_yield``) each time its loop
has served what was ready and is about to poll for more (``YieldBetweenBatches``). Two
busy event loops on one core (more ingest processes than cores, or one beside a database
backend) otherwise run until the kernel preempts them at the end of a time slice, often
in the middle of a batch, and every ping the other process has ready waits that slice
out. Yielding at batch boundaries makes them alternate batch by batch: with two
processes pinned to one core, their p99 against one process's went from 1.58x to 1.29x
(medians of three rounds, same run), the throughput unchanged within the noise. With
nothing else runnable on the core, the call returns at once (one system call per loop
pass, amortised over its batch).
"""

from __future__ import annotations

import errno
import heapq
import itertools
import logging
import math
import os
import socket as stdlib_socket
from collections.abc import Container
from dataclasses import dataclass, field

import trio
from trio.lowlevel import wait_readable, wait_writable

from core.problems import error_json

from .clock import Clock
from .forward import Answer, Upstream
from .protocol import Limits, Phase, ResponseCache, Session

log = logging.getLogger(__name__)

RECV_SIZE = 64 * 1024
LINGER_SECONDS = 2.0
LINGER_BYTES = 256 * 1024
EXPIRE_BATCH = 64  # connections the reaper cancels before letting other tasks run
EVICT_CHECKS = 64  # live heap entries looked at for a connection to close at the cap
COMPACT_AT = 1024  # dead heap entries (ended connections, moved deadlines) worth a rebuild
SLOW_HEAD = 1.0  # a head still arriving after this long has the least claim to a place
EVICT_PENDING = 64  # evicted connections not yet closed; beyond this, accepting waits
_ACCEPT_PAUSE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


@dataclass(eq=False)
class _Connection:
    scope: trio.CancelScope
    session: Session
    send_deadline: float = 0.0  # while sending: when to give up on the peer reading
    registered: float = math.inf  # the deadline of its live entry in the reaper's heap
    expired: bool = False
    evicted: bool = False  # closed to make room for a new connection at the cap

    def deadline(self) -> float:
        if self.send_deadline:
            return self.send_deadline
        return self.session.deadline()


class _Reaper:
    """Cancels connections whose deadline passed; see the module docstring."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, _Connection]] = []
        self._seq = itertools.count()
        self._wake = trio.Event()
        self._dead = 0  # entries of no use still in the heap (about: see discard())

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, conn: _Connection) -> None:
        """Register the connection's deadline (when new, or when it moved earlier)."""
        deadline = conn.deadline()
        if not self._heap or deadline < self._heap[0][0]:
            self._wake.set()
        if conn.registered != math.inf:
            self._dead += 1  # its earlier entry
        conn.registered = deadline
        heapq.heappush(self._heap, (deadline, next(self._seq), conn))

    def discard(self, conn: _Connection) -> None:
        """`conn` has ended: its entry is of no use (every entry of a connection whose
        `registered` is not the entry's own is skipped). Rebuild the heap without such
        entries once they are most of it. The count may run over (the entry of a connection
        that timed out, was evicted or closed may have been popped already, and is counted
        here all the same): a rebuild then comes early, still at most once per COMPACT_AT
        ended connections, and resets the count."""
        if conn.registered == math.inf:
            return
        conn.registered = math.inf
        self._dead += 1
        heap = self._heap
        if self._dead >= COMPACT_AT and 2 * self._dead >= len(heap):
            heap[:] = [entry for entry in heap if entry[0] == entry[2].registered]
            heapq.heapify(heap)  # in place: run() holds this list
            self._dead = 0

    def evict(self, checks: int = EVICT_CHECKS) -> _Connection | None:
        """Cancel the connection with the least claim to its place among the first `checks`
        entries of the heap (nearest deadline first): a head that has been arriving for
        SLOW_HEAD seconds or more, else an idle connection or a younger partial head, else
        a partial body. Connections forwarding or sending keep their places."""
        heap = self._heap
        now = self._clock.now()
        kept: list[tuple[float, int, _Connection]] = []
        idle_or_head = body = victim = None
        # Entries of no use (stale, closed, already evicted: the oldest, so the first
        # popped; thousands after a mass timeout) are dropped for good and do not count
        # against `checks`: each is popped once, so the cost is amortised.
        try:
            while heap and checks > 0:
                entry = heapq.heappop(heap)
                conn = entry[2]
                if entry[0] != conn.registered:
                    self._dead -= 1
                    continue  # stale, or ended
                if conn.evicted:
                    continue  # already on its way out
                if conn.session.closed and not conn.send_deadline:
                    continue  # closed: run() would drop this entry too
                checks -= 1
                kept.append(entry)
                if conn.send_deadline:
                    continue  # (a closed one still sending keeps its deadline)
                session = conn.session
                phase = session.phase
                if phase is Phase.HEAD and now - session.phase_since >= SLOW_HEAD:
                    victim = conn
                    break
                if phase is Phase.IDLE or phase is Phase.HEAD:
                    idle_or_head = idle_or_head or conn
                elif phase is Phase.BODY:
                    body = body or conn
            victim = victim or idle_or_head or body
        finally:
            for entry in kept:
                if entry[2] is not victim:
                    heapq.heappush(heap, entry)
        if victim is not None:
            victim.evicted = True
            victim.scope.cancel()
        return victim

    async def run(self) -> None:
        clock = self._clock
        heap = self._heap
        while True:
            now = clock.now()
            expired = 0
            while heap and heap[0][0] <= now:
                if expired == EXPIRE_BATCH:
                    # A thousand deadlines due together (a slowloris started at once) must
                    # not make one batch of work that valid pings wait behind.
                    await trio.lowlevel.checkpoint()
                    now = clock.now()
                    expired = 0
                    continue
                due, _seq, conn = heapq.heappop(heap)
                if due != conn.registered:
                    self._dead -= 1
                    continue  # stale: a later add() registered an earlier deadline, or it ended
                if conn.session.closed and not conn.send_deadline:
                    continue
                real = conn.deadline()
                if real > now:
                    conn.registered = real
                    heapq.heappush(heap, (real, next(self._seq), conn))
                else:
                    conn.expired = True
                    conn.scope.cancel()
                    expired += 1
            self._wake = trio.Event()
            with trio.move_on_at(clock.to_trio(heap[0][0]) if heap else math.inf):
                await self._wake.wait()


@dataclass
class ListenerStatistics:
    open_connections: int
    accepted: int
    rejected: int
    evicted: int
    timeouts: int
    over_address_limit: int
    deadline_entries: int  # in the reaper's heap: open connections, and ended ones not yet dropped


@dataclass
class Listener:
    """Serves heartbeats on listening sockets; see the module docstring."""

    responder: ResponseCache
    limits: Limits
    clock: Clock
    upstream: Upstream | None = None  # where requests that are not heartbeats go
    # Addresses exempt from the per-address share: proxies that carry many clients.
    trusted: Container[str] = frozenset()
    accepted: int = 0
    rejected: int = 0
    evicted: int = 0
    timeouts: int = 0
    over_address_limit: int = 0  # refused: their address had its share of the cap
    _per_address: dict[str, int] = field(default_factory=dict)
    _reaper: _Reaper | None = None
    _evicting: int = 0  # evicted, not yet closed: they still hold a descriptor
    _connections: set[_Connection] = field(default_factory=set)
    _draining: bool = False
    _accepting: trio.CancelScope = field(default_factory=trio.CancelScope)
    _idle: trio.Event = field(default_factory=trio.Event)

    def statistics(self) -> ListenerStatistics:
        return ListenerStatistics(
            len(self._connections), self.accepted, self.rejected, self.evicted, self.timeouts,
            self.over_address_limit, len(self._reaper) if self._reaper is not None else 0,
        )  # fmt: skip

    async def serve(
        self,
        listen_sock: stdlib_socket.socket,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept and serve connections until stop() has drained them.

        Returns once every connection is closed; closes `listen_sock`.
        """
        reaper = self._reaper = _Reaper(self.clock)
        listen_sock.setblocking(False)
        async with trio.open_nursery() as outer:
            outer.start_soon(reaper.run)
            async with trio.open_nursery() as nursery:
                task_status.started()
                with self._accepting, listen_sock:
                    while True:
                        await wait_readable(listen_sock)
                        await self._accept_ready(listen_sock, nursery, reaper)
            outer.cancel_scope.cancel()

    async def _accept_ready(
        self, listen_sock: stdlib_socket.socket, nursery: trio.Nursery, reaper: _Reaper
    ) -> None:
        """Accept every connection waiting in the backlog."""
        limit = self.limits.max_connections
        per_address_limit = self.limits.max_connections_per_address
        while True:
            if self._evicting >= EVICT_PENDING and len(self._connections) - self._evicting >= limit:
                return  # let the evicted connections close first; the rest wait in the backlog
            try:
                sock, address = listen_sock.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in _ACCEPT_PAUSE_ERRNOS:
                    log.warning("accept paused: %s", errno.errorcode.get(exc.errno))
                    await trio.sleep(0.05)
                    return
                raise
            client = str(address[0])
            per_address = self._per_address.get(client, 0)
            if per_address >= per_address_limit and client not in self.trusted:
                self.over_address_limit += 1
                _refuse(sock, TOO_MANY_FROM_ADDRESS)
                continue
            if len(self._connections) - self._evicting >= limit:
                if reaper.evict() is None:
                    self.rejected += 1
                    sock.close()
                    continue
                self.evicted += 1
                self._evicting += 1
            self.accepted += 1
            self._per_address[client] = per_address + 1
            sock.setblocking(False)
            sock.setsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY, 1)
            forwarding = self.upstream is not None
            session = Session(
                self.responder, self.limits, self.clock.now(), forwarding=forwarding,
                client=client, proxied=client in self.trusted,
            )  # fmt: skip
            conn = _Connection(trio.CancelScope(), session)
            self._connections.add(conn)
            reaper.add(conn)
            nursery.start_soon(self._serve_connection, sock, conn, reaper, client)

    async def stop(self, grace: float) -> None:
        """Stop accepting, let requests in progress finish within `grace` seconds."""
        self._draining = True
        self._accepting.cancel()
        for conn in list(self._connections):
            if not conn.session.busy:
                conn.scope.cancel()
        with trio.move_on_after(grace):
            while self._connections:
                self._idle = trio.Event()
                await self._idle.wait()
        for conn in list(self._connections):
            conn.scope.cancel()

    async def _serve_connection(
        self, sock: stdlib_socket.socket, conn: _Connection, reaper: _Reaper, client: str
    ) -> None:
        # Wait, then read: a keep-alive client sends its next ping only after our answer,
        # so reading first would mostly fail with EAGAIN, a syscall and an exception each.
        session = conn.session
        clock = self.clock
        responder = self.responder
        send_timeout = self.limits.send_timeout
        try:
            with sock:
                with conn.scope:
                    while True:
                        await wait_readable(sock)
                        try:
                            data = sock.recv(RECV_SIZE)
                        except BlockingIOError:
                            continue
                        now = clock.now()
                        responder.refresh(now)
                        out = session.receive(data, now)
                        if session.deadline() < conn.registered and not session.closed:
                            reaper.add(conn)  # e.g. from the head timeout to keep-alive
                        while True:
                            if out:
                                try:
                                    sent = sock.send(out)
                                except BlockingIOError:
                                    sent = 0
                                if sent < len(out):  # a slow reader: bound the wait
                                    conn.send_deadline = now + send_timeout
                                    await _send_all(sock, memoryview(out)[sent:])
                                    conn.send_deadline = 0.0
                            if session.pending is None or self.upstream is None:
                                break
                            if session.deadline() < conn.registered:
                                reaper.add(conn)
                            answer = await _forward(self.upstream, session, sock, client)
                            if answer is None:
                                session.receive(b"", clock.now())  # the client has gone
                                break
                            now = clock.now()
                            out = session.forwarded(answer, now)
                        if session.closed or (self._draining and not session.busy):
                            break
                if conn.expired and not (conn.send_deadline or conn.evicted or self._draining):
                    self.timeouts += 1
                    out = session.timed_out()
                    if out:
                        with trio.move_on_after(1.0):
                            await _send_all(sock, memoryview(out))
                if session.linger:
                    await _linger(sock)
        except OSError:
            pass  # reset by the peer: nothing to answer
        finally:
            if conn.evicted:
                self._evicting -= 1
            left = self._per_address.pop(client) - 1
            if left:
                self._per_address[client] = left
            self._connections.discard(conn)
            reaper.discard(conn)
            if not self._connections:
                self._idle.set()


_TOO_MANY_BODY = error_json("too_many_connections", "too many connections from your address")
TOO_MANY_FROM_ADDRESS = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nConnection: close\r\nRetry-After: 1\r\n\r\n%s"
    % (len(_TOO_MANY_BODY), _TOO_MANY_BODY)
)


def _refuse(sock: stdlib_socket.socket, answer: bytes) -> None:
    """Answer a connection we will not serve, without waiting for it, and close it."""
    try:
        sock.setblocking(False)
        sock.send(answer)
    except OSError:
        pass
    sock.close()


async def _forward(
    upstream: Upstream, session: Session, sock: stdlib_socket.socket, client: str
) -> Answer | None:
    """The control process's answer to the pending request, or None if the client closed
    its connection first (then the upstream request is abandoned, its connection closed,
    rather than finishing work nobody will read)."""
    assert session.pending is not None
    answer: Answer | None = None
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            while True:
                await wait_readable(sock)
                try:
                    peeked = sock.recv(1, stdlib_socket.MSG_PEEK)
                except BlockingIOError:
                    continue
                except OSError:
                    peeked = b""
                if not peeked:
                    nursery.cancel_scope.cancel()
                return  # a pipelined request: it waits its turn; stop watching

        nursery.start_soon(watch)
        answer = await upstream.forward(session.pending, client)
        nursery.cancel_scope.cancel()
    return answer


async def _send_all(sock: stdlib_socket.socket, view: memoryview) -> None:
    while view:
        await wait_writable(sock)
        try:
            sent = sock.send(view)
        except BlockingIOError:
            continue
        view = view[sent:]


async def _linger(sock: stdlib_socket.socket) -> None:
    """Half-close, then read and drop what the peer still sends, for a bounded time."""
    try:
        sock.shutdown(stdlib_socket.SHUT_WR)
        received = 0
        with trio.move_on_after(LINGER_SECONDS):
            while received < LINGER_BYTES:
                await wait_readable(sock)
                try:
                    chunk = sock.recv(RECV_SIZE)
                except BlockingIOError:
                    continue
                if not chunk:
                    break
                received += len(chunk)
    except OSError:
        pass


def open_listen_socket(
    host: str, port: int, backlog: int = 4096, *, reuse_port: bool = False
) -> stdlib_socket.socket:
    """A non-blocking listening TCP socket on host:port (SO_REUSEADDR; with `reuse_port`,
    SO_REUSEPORT: several processes on one port, the kernel spreading connections)."""
    family = stdlib_socket.AF_INET6 if ":" in host else stdlib_socket.AF_INET
    sock = stdlib_socket.socket(family, stdlib_socket.SOCK_STREAM)
    try:
        sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class YieldBetweenBatches(trio.abc.Instrument):
    """A trio instrument: ``os.sched_yield()`` before each I/O poll, so that another
    process ready on this core runs between our batches rather than in the middle of
    one (module docstring, "Sharing a core"). For the ingest process only: a test's
    in-process ingest shares its loop with the test."""

    def __init__(self) -> None:
        self.yields = 0

    def before_io_wait(self, timeout: float) -> None:
        self.yields += 1
        os.sched_yield()
