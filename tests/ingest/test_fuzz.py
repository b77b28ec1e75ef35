"""Fuzzing the ingest's request handling, fast path and h11 together (issue 6, scenario
13): mutated requests, fed whole and in random pieces to a `Session`, with and without a
control process to forward to. Nothing may raise, every answer must be a well-formed
HTTP/1.1 response with a 1xx, 2xx or 4xx status (never a 5xx of our own), nothing may be
answered after the connection was closed.

A seeded generator, not hypothesis: it runs 1,000,000 inputs with `LASTSEEN_SLOW=1`
(`make test-faults`) and 20,000 otherwise; a failure prints the seed and the input, and
`LASTSEEN_FUZZ_SEED` replays it.
"""

from __future__ import annotations

import os
import random
import re
import time

import pytest

from core import DeadlineTable
from core.tokens import digest
from ingest._fastpath import FastPath
from ingest.forward import Answer
from ingest.protocol import Limits, ResponseCache, Session

from .conftest import T0, TOKEN

pytestmark = pytest.mark.security

INPUTS = 1_000_000 if os.environ.get("LASTSEEN_SLOW") else 20_000
STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-4]\d\d) [^\r\n]*\r\n")
UPSTREAM = Answer(200, [(b"content-type", b"application/json")], b"{}")

PING = f"POST /api/v1/heartbeats/{TOKEN} HTTP/1.1\r\nHost: h\r\n\r\n".encode()
SEEDS = [
    PING,
    PING.replace(b"POST", b"HEAD"),
    PING.replace(b"\r\n\r\n", b"\r\nContent-Length: 5\r\n\r\nhello"),
    PING.replace(b"\r\n\r\n", b"\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    PING.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nab"),
    PING.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"),
    PING.replace(b"HTTP/1.1", b"HTTP/1.0"),
    PING.replace(b"/api/v1/heartbeats/", b"/api/v1/heartbeats/%61"),
    PING.replace(TOKEN.encode(), TOKEN.encode() + b"?x=1"),
    b"GET /api/v1/monitors HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer x\r\n\r\n",
    b'POST /api/v1/monitors HTTP/1.1\r\nHost: h\r\nContent-Length: 13\r\n\r\n{"name":"x"}\n',
    b"GET /status/acme HTTP/1.1\r\nHost: h\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"GET /\r\n\r\n",
    PING + PING,
    PING.replace(b"\r\n\r\n", b"\r\nContent-Length: 39\r\n\r\n") + PING[:39],
]
INTERESTING = [b"\r\n", b"\n", b"\r", b" ", b"\t", b":", b"\x00", b"0", b"9" * 20, b"-1",
               b"chunked", b"Content-Length: ", b"Transfer-Encoding: ", b"Host: ", b",",
               b"\xff", b"HTTP/1.1", b"\r\n\r\n", TOKEN.encode()]  # fmt: skip


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(7)
        at = rng.randint(0, len(buf))
        if op == 0 and buf:  # flip a bit
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # insert a random byte
            buf[at:at] = bytes([rng.randrange(256)])
        elif op == 2 and buf:  # delete a run
            del buf[at : at + rng.randint(1, 8)]
        elif op == 3:  # insert something a parser cares about
            buf[at:at] = rng.choice(INTERESTING)
        elif op == 4:  # splice in part of another seed
            other = rng.choice(SEEDS)
            start = rng.randrange(len(other))
            buf[at:at] = other[start : start + rng.randint(1, 40)]
        elif op == 5 and buf:  # duplicate a run
            piece = buf[at : at + rng.randint(1, 16)]
            buf[at:at] = piece
        elif op == 6:  # random bytes
            buf[at:at] = rng.randbytes(rng.randint(1, 12))
    return bytes(buf)


def pieces(rng: random.Random, data: bytes) -> list[bytes]:
    """The input as the network might deliver it: whole, byte by byte, or in chunks."""
    mode = rng.randrange(4)
    if mode == 0 or len(data) < 2:
        return [data]
    if mode == 1:
        return [data[i : i + 1] for i in range(len(data))]
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 5))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def check_answers(out: bytes) -> list[int]:
    """The statuses of the responses in `out`; fails on anything else."""
    statuses = []
    pos = 0
    while pos < len(out):
        m = STATUS_LINE.match(out, pos)
        assert m, out[pos : pos + 80]
        statuses.append(int(m.group(1)))
        end = out.index(b"\r\n\r\n", pos) + 4
        head = out[pos:end].lower()
        length = re.search(rb"\r\ncontent-length: (\d+)\r\n", head)
        pos = end
        if length and not (end == len(out) or out.startswith(b"HTTP/1.1 ", end)):
            pos += int(length.group(1))  # (an answer to HEAD has the length, not the body)
    assert pos == len(out), out
    return statuses


def one(rng: random.Random, responder: ResponseCache, data: bytes, forwarding: bool) -> None:
    session = Session(responder, Limits(max_requests_per_connection=50), T0, forwarding=forwarding)
    now = T0
    closed_at = None
    for part in pieces(rng, data):
        now += 0.001
        out = session.receive(part, now)
        while session.pending is not None:
            out += session.forwarded(UPSTREAM, now)
        if closed_at is not None:
            assert out == b"", "answered after the close"
        check_answers(out)
        if session.closed and closed_at is None:
            closed_at = now
    if not session.closed:
        check_answers(session.timed_out())


def test_a_million_mutated_requests_raise_nothing_and_get_only_well_formed_answers():
    seed = int(os.environ.get("LASTSEEN_FUZZ_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    table = DeadlineTable()
    table.upsert(1, digest(TOKEN), 60, 0, 1, False, T0)
    responder = ResponseCache(FastPath(table))
    responder.refresh(T0)
    started = time.perf_counter()
    for i in range(INPUTS):
        data = mutate(rng, rng.choice(SEEDS)) if i % 10 else rng.choice(SEEDS)
        try:
            one(rng, responder, data, forwarding=bool(i & 1))
        except Exception as exc:
            raise AssertionError(f"seed {seed}, input {i}: {data!r}") from exc
    took = time.perf_counter() - started
    print(f"\n{INPUTS:,} inputs in {took:.1f} s ({INPUTS / took:,.0f}/s), seed {seed}:"
          " 0 exceptions, every answer well formed, none after a close")  # fmt: skip
