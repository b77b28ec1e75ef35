"""WAL written per ping: what a fleet's pings cost PostgreSQL (issue 11's database diet).

    python -m benchmarks.wal [--monitors 100000] [--rounds 5] [--out FILE]

A fleet pings each monitor once per interval, so between two flushes a monitor is
pinged at most once: every ping is a row the flush writes. The benchmark has the ingest
(on a durable embedded PostgreSQL: full-page writes on, as in production) load the
monitors, gives each its first ping (pending -> up), then for each round pings every
monitor exactly once (pipelined over a few keep-alive connections) and waits for the
flush; WAL is read with pg_current_wal_insert_lsn() around the rounds. Reported: bytes
per ping, and what that makes a day for a million monitors on 30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from . import harness
from .report import Result, emit

CONNECTIONS = 8
BATCH = 900  # requests pipelined on one connection (the ingest closes one after 1,000)
FLUSH_WAIT = 2.5  # seconds after a round: the flush (every second) has written it


def _ping_all(port: int, tokens: list[str]) -> int:
    """Each token once, pipelined: batches of BATCH requests (under the ingest's requests
    per connection) on CONNECTIONS connections at a time; 204s counted."""
    answered = 0
    step = BATCH * CONNECTIONS
    for start in range(0, len(tokens), step):
        part = tokens[start : start + step]
        groups = [part[i : i + BATCH] for i in range(0, len(part), BATCH)]
        socks = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in groups]
        try:
            for s, group in zip(socks, groups, strict=True):
                s.sendall(b"".join(
                    f"POST /api/v1/heartbeats/{t} HTTP/1.1\r\nHost: b\r\n\r\n".encode()
                    for t in group
                ))  # fmt: skip
            for s, group in zip(socks, groups, strict=True):
                data = b""
                while data.count(b"HTTP/1.1 ") < len(group):
                    chunk = s.recv(1 << 20)
                    if not chunk:
                        break
                    data += chunk
                answered += data.count(b"HTTP/1.1 204 ")
        finally:
            for s in socks:
                s.close()
    return answered


def _lsn(dsn: str) -> int:
    async def go() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            value: int = await conn.fetchval(
                "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint"
            )
            return value
        finally:
            await conn.close()

    return asyncio.run(go())


def run(monitors: int, rounds: int) -> Result:
    server_pin, _load_pin = harness.cores()
    workdir = Path(tempfile.mkdtemp(prefix="lastseen-wal-"))
    figures: dict[str, Any] = {"monitors": monitors, "rounds": rounds}
    try:
        with harness.database(pin=server_pin, durable=True) as dsn:
            tokens = harness.seed(dsn, monitors, workdir / "tokens.txt")
            log = workdir / "ingest.log"
            with harness.ingest(dsn, tokens[-1], pin=server_pin, log=log) as ingest:
                _ping_all(ingest.port, tokens)  # pending -> up: events, not the steady state
                time.sleep(FLUSH_WAIT)
                before = _lsn(dsn)
                answered = 0
                started = time.perf_counter()
                for _ in range(rounds):
                    answered += _ping_all(ingest.port, tokens)
                    time.sleep(FLUSH_WAIT)
                took = time.perf_counter() - started
                after = _lsn(dsn)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    pings = monitors * rounds
    wal = after - before
    per_ping = wal / pings if pings else 0.0
    per_day_1m = per_ping * 1_000_000 / 30 * 86_400
    figures.update({
        "pings": pings, "answered_204": answered, "wal_bytes": wal,
        "wal_bytes_per_ping": per_ping, "wal_bytes_per_day_1m_monitors_30s": per_day_1m,
        "seconds": took,
    })  # fmt: skip
    rows: list[tuple[str, ...]] = [
        ("monitors", f"{monitors:,}"),
        ("pings (each monitor once per round)", f"{pings:,} ({answered:,} answered 204)"),
        ("WAL written", f"{wal:,} bytes"),
        ("WAL per ping", f"{per_ping:,.0f} bytes"),
        ("a day at 1,000,000 monitors on 30 s", f"{per_day_1m / 1e9:,.0f} GB"),
    ]
    title = f"WAL per ping, {monitors:,} monitors, {rounds} rounds, durable PostgreSQL"
    return Result("wal", title, rows, figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--monitors", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out")
    args = parser.parse_args()
    emit([run(args.monitors, args.rounds)], args.out)


if __name__ == "__main__":
    main()
