"""WAL written per ping: what a fleet's pings cost PostgreSQL (issue 11's database diet).

    python -m benchmarks.wal [--monitors 100000] [--interval 30] [--seen 10] [--rounds 2]
                             [--out FILE]

Two runs of the same fleet on the same durable embedded PostgreSQL (full-page writes on,
as in production), one ingest process each:

- the reference, ``LASTSEEN_SEEN_SECONDS=0``: every ping's last-seen time is a row
  update of ``monitor_state`` at the next flush (what every ping cost before the diet);
- the diet, ``LASTSEEN_SEEN_SECONDS=<seen>``: an up monitor's pings go to the seen log
  (``core/seenlog.py``), one compact row every `seen` seconds, full sections included.

Each run gives every monitor a ping (pending -> up, or a first seen-log row) and lets it
land; measures the WAL of an idle stretch (nothing pinged; leases of 10 minutes, so that
no renewal falls into either stretch); then pings the fleet as it pings in production,
each monitor once per `interval`, spread evenly over it (pipelined over keep-alive
connections), for `rounds` intervals, and waits for the last write. WAL is read with
pg_current_wal_insert_lsn(). The idle stretch's WAL is shown apart; the pinging
stretch's is all counted as the pings' (the diet's full sections, which go on when idle,
included). `interval` and `seen` keep their 3:1 ratio when scaled down (``--smoke``):
what decides the cost is how many pings of a monitor one row gathers (one, at 30 s and
10 s).

Last, the WAL of an idle ingest with the default 8 s lease: its renewals (a row per
shard every 2 s). Not the pings', but every cluster pays it, and after the diet it is
the larger share at 100,000 monitors.
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


def _paced(port: int, tokens: list[str], interval: float, rounds: int) -> int:
    """Each token once per `interval`, spread over it in steps of a quarter second."""
    steps = max(1, int(interval * 4))
    size = -(-len(tokens) // steps)
    answered = 0
    started = time.monotonic()
    for n in range(rounds * steps):
        part = n % steps
        answered += _ping_all(port, tokens[part * size : (part + 1) * size])
        time.sleep(max(0.0, started + (n + 1) * interval / steps - time.monotonic()))
    return answered


def _mode(dsn: str, tokens: list[str], seen: float, args: dict[str, Any]) -> dict[str, float]:
    """One run of the fleet with LASTSEEN_SEEN_SECONDS=`seen`: its WAL figures."""
    interval, rounds, log = args["interval"], args["rounds"], args["log"]
    settle = FLUSH_WAIT + seen  # the flush, and the seen log's row, have written it
    # Leases of 10 minutes: no renewal (1,024 row updates) falls into the measurement.
    env = {"LASTSEEN_SEEN_SECONDS": str(seen), "LASTSEEN_LEASE_SECONDS": "600"}
    with harness.ingest(dsn, tokens[-1], pin=args["pin"], log=log, env=env) as ingest:
        _ping_all(ingest.port, tokens)
        time.sleep(settle)
        idle_for = interval * rounds / 2
        start = _lsn(dsn)
        time.sleep(idle_for)
        idle = (_lsn(dsn) - start) / idle_for
        before, started = _lsn(dsn), time.monotonic()
        answered = _paced(ingest.port, tokens, interval, rounds)
        time.sleep(settle)
        took = time.monotonic() - started
        wal = _lsn(dsn) - before
    pings = len(tokens) * rounds
    # Leases held still, nothing else writes: the pinging stretch's WAL is the pings'
    # (the diet's full sections, written also when idle, included).
    attributable = wal
    return {
        "pings": pings, "answered_204": answered, "wal_bytes": wal, "seconds": took,
        "idle_wal_bytes_per_second": idle, "wal_bytes_attributable": attributable,
        "wal_bytes_per_ping": attributable / pings if pings else 0.0,
    }  # fmt: skip


def _lease_wal(dsn: str, tokens: list[str], seconds: float, args: dict[str, Any]) -> float:
    """WAL per second of an idle ingest with the default lease (8 s): its renewals, every
    2 s, of a row per shard. Not the pings', but every cluster pays it."""
    with harness.ingest(dsn, tokens[-1], pin=args["pin"], log=args["log"]):
        time.sleep(FLUSH_WAIT)
        start = _lsn(dsn)
        time.sleep(seconds)
        return (_lsn(dsn) - start) / seconds


def run(monitors: int, rounds: int, interval: float = 30.0, seen: float = 10.0) -> Result:
    server_pin, _load_pin = harness.cores()
    workdir = Path(tempfile.mkdtemp(prefix="lastseen-wal-"))
    figures: dict[str, Any] = {
        "monitors": monitors, "rounds": rounds, "interval": interval, "seen_seconds": seen,
    }  # fmt: skip
    args = {
        "interval": interval,
        "rounds": rounds,
        "log": workdir / "ingest.log",
        "pin": server_pin,
    }
    try:
        with harness.database(pin=server_pin, durable=True) as dsn:
            tokens = harness.seed(dsn, monitors, workdir / "tokens.txt")
            before = _mode(dsn, tokens, 0.0, args)
            after = _mode(dsn, tokens, seen, args)
            leases = _lease_wal(dsn, tokens, max(4.0, interval * rounds / 2), args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ratio = (
        after["wal_bytes_per_ping"] / before["wal_bytes_per_ping"]
        if before["wal_bytes_per_ping"]
        else 0.0
    )
    figures.update({"before": before, "after": after, "ratio": ratio,
                    "idle_wal_bytes_per_second_default_lease": leases})  # fmt: skip
    day = 1_000_000 / 30 * 86_400 / 1e9  # pings a day at 1M monitors on 30 s, in 1e9
    rows: list[tuple[str, ...]] = [
        ("", "every ping a row update (before)", f"seen log every {seen:g} s (after)"),
        ("pings (each monitor once per interval)", *(
            f"{m['pings']:,} ({m['answered_204']:,} answered 204)" for m in (before, after))),
        ("WAL while pinging", *(f"{m['wal_bytes']:,} bytes" for m in (before, after))),
        ("WAL idle (nothing pinged)", *(f"{m['idle_wal_bytes_per_second']:,.0f} bytes/s"
                                for m in (before, after))),
        ("WAL per ping (attributable)", *(f"{m['wal_bytes_per_ping']:,.1f} bytes"
                                          for m in (before, after))),
        ("a day at 1,000,000 monitors on 30 s", *(f"{m['wal_bytes_per_ping'] * day:,.1f} GB"
                                                   for m in (before, after))),
        ("after / before (target <= 0.10)", "", f"{ratio:.3f}x"),
        ("WAL idle with the default 8 s lease (renewals, a row per shard every 2 s)", "",
         f"{leases:,.0f} bytes/s"),
    ]  # fmt: skip
    title = (
        f"WAL per ping, {monitors:,} monitors each pinged every {interval:g} s,"
        f" {rounds} intervals, durable PostgreSQL"
    )
    return Result("wal", title, rows, figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--monitors", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--seen", type=float, default=10.0)
    parser.add_argument("--out")
    args = parser.parse_args()
    emit([run(args.monitors, args.rounds, args.interval, args.seen)], args.out)


if __name__ == "__main__":
    main()
