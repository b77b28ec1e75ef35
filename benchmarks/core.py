"""The token table and deadline heap at scale: memory, upserts, pings, pops, detection lag.

    python -m benchmarks.core [--monitors 1000000] [--spread 60] [--out FILE]

References measured in the same run: a plain Python dict of digest -> record (memory and
lookups), and h11 parsing the same pipelined pings the native fast path answers.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
import tracemalloc
from typing import Any

import h11
import trio

from core import DeadlineTable
from core.records import Event
from core.tokens import digest
from ingest import responses
from ingest._fastpath import FastPath
from ingest.clock import Clock
from ingest.scheduler import Deadlines

from .report import Result, emit

T0 = 1_800_000_000.0


def _digests(n: int) -> list[bytes]:
    return [digest(os.urandom(32).hex()) for _ in range(n)]


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def bench_table(n: int) -> dict[str, Any]:
    digests = _digests(n)
    table = DeadlineTable(capacity=n)
    started = time.perf_counter()
    for i, d in enumerate(digests):
        table.upsert(i, d, 60, 0, 1, False, T0)
    upsert_s = time.perf_counter() - started

    started = time.perf_counter()
    ping = table.ping
    for d in digests:
        ping(d, T0 + 1)
    ping_s = time.perf_counter() - started
    memory = table.memory_bytes() / n

    started = time.perf_counter()
    missed = table.pop_due(T0 + 1000)
    pop_s = time.perf_counter() - started
    assert missed == n, (missed, n)

    # Reference: the same lookups in a Python dict of small records.
    gc.collect()
    tracemalloc.start()
    ref = {d: [i, 60, 0, 1, 0.0, 0.0, 0, 1] for i, d in enumerate(digests)}
    ref_memory = tracemalloc.get_traced_memory()[0] / n
    tracemalloc.stop()
    started = time.perf_counter()
    for d in digests:
        ref[d][4] = T0 + 1
    ref_s = time.perf_counter() - started
    del ref
    return {
        "monitors": n,
        "bytes_per_monitor": memory,
        "dict_bytes_per_monitor": ref_memory,
        "upserts_per_s": _rate(n, upsert_s),
        "pings_per_s": _rate(n, ping_s),
        "dict_updates_per_s": _rate(n, ref_s),
        "pops_per_s": _rate(n, pop_s),
    }


def bench_fast_path(n: int, requests: int) -> dict[str, Any]:
    """Pipelined pings through the native parser vs h11 parsing the same bytes."""
    tokens = [os.urandom(32).hex() for _ in range(min(n, 10_000))]
    table = DeadlineTable(capacity=len(tokens))
    for i, t in enumerate(tokens):
        table.upsert(i, digest(t), 60, 0, 1, False, T0)
    fast = FastPath(table)
    responses.refresh(fast, T0)
    batch = b"".join(
        f"POST /api/v1/heartbeats/{tokens[i % len(tokens)]} HTTP/1.1\r\nHost: x\r\n"
        "User-Agent: bench\r\n\r\n".encode()
        for i in range(100)
    )
    rounds = max(1, requests // 100)
    started = time.perf_counter()
    for _ in range(rounds):
        _out, consumed, answered, _reason = fast.process(bytearray(batch), T0 + 2, 1000)
        assert answered == 100 and consumed == len(batch)
    fast_s = time.perf_counter() - started

    started = time.perf_counter()
    for _ in range(max(1, rounds // 10)):
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(batch)
        for _i in range(100):
            assert isinstance(conn.next_event(), h11.Request)
            conn.next_event()
            conn.send(h11.Response(status_code=204, headers=[]))
            conn.send(h11.EndOfMessage())
            conn.start_next_cycle()
    h11_s = (time.perf_counter() - started) * 10
    return {
        "fast_path_requests_per_s": _rate(rounds * 100, fast_s),
        "h11_requests_per_s": _rate(rounds * 100, h11_s),
    }


def bench_detection_lag(n: int, spread: float) -> dict[str, Any]:
    """Deadlines spread over `spread` seconds, run by the ingest's own scheduler loop."""
    lags: list[float] = []

    async def main() -> None:
        clock = Clock()
        digests = _digests(n)
        table = DeadlineTable(capacity=n)
        # The first deadline lies past the time this set-up takes, so none is late already.
        base = clock.now() + 2 + n / 200_000
        step = spread / n
        for i, d in enumerate(digests):
            table.upsert(i, d, 60, 0, 1, False, base - 1000)
            # Last ping 60 s before its deadline: deadlines land in [base+1, base+1+spread).
            table.ping(d, base - 59 + i * step)
        table.take_events()
        assert clock.now() < base, "set-up outran its margin"

        def on_events(events: list[Event], at: float) -> None:
            lags.extend(at - e.at for e in events if e.kind == "down")

        loop = Deadlines(lambda: table, clock, on_events)
        with trio.move_on_at(clock.to_trio(base + spread + 5)):
            await loop.run()

    trio.run(main)
    lags.sort()
    if not lags:
        return {"detection_lag_events": 0}
    return {
        "detection_lag_events": len(lags),
        "detection_lag_p50_ms": 1000 * statistics.median(lags),
        "detection_lag_p99_ms": 1000 * lags[int(0.99 * (len(lags) - 1))],
        "detection_lag_max_ms": 1000 * lags[-1],
    }


def run(monitors: int, spread: float) -> Result:
    figures = bench_table(monitors)
    figures.update(bench_fast_path(monitors, 200_000 if monitors >= 100_000 else 20_000))
    figures.update(bench_detection_lag(monitors, spread))
    rows: list[tuple[str, ...]] = [
        ("memory per monitor (table+heap+indexes)", f"{figures['bytes_per_monitor']:.1f} B",
         f"dict: {figures['dict_bytes_per_monitor']:.0f} B",
         f"{figures['bytes_per_monitor'] / figures['dict_bytes_per_monitor']:.2f}x"),
        ("upserts", f"{figures['upserts_per_s']:,.0f}/s", "", ""),
        ("pings (table.ping from Python)", f"{figures['pings_per_s']:,.0f}/s",
         f"dict: {figures['dict_updates_per_s']:,.0f}/s",
         f"{figures['pings_per_s'] / figures['dict_updates_per_s']:.2f}x"),
        ("pings (native parse+hash+lookup)", f"{figures['fast_path_requests_per_s']:,.0f}/s",
         f"h11: {figures['h11_requests_per_s']:,.0f}/s",
         f"{figures['fast_path_requests_per_s'] / figures['h11_requests_per_s']:.1f}x"),
        ("pops (deadlines fired)", f"{figures['pops_per_s']:,.0f}/s", "", ""),
    ]  # fmt: skip
    if figures.get("detection_lag_events"):
        rows.append((
            f"detection lag ({figures['detection_lag_events']:,} deadlines over {spread:g} s)",
            f"p50 {figures['detection_lag_p50_ms']:.1f} ms",
            f"p99 {figures['detection_lag_p99_ms']:.1f} ms",
            f"max {figures['detection_lag_max_ms']:.1f} ms",
        ))  # fmt: skip
    return Result("core", f"table and heap at {monitors:,} monitors", rows, figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--monitors", type=int, default=1_000_000)
    parser.add_argument("--spread", type=float, default=60.0)
    parser.add_argument("--out")
    args = parser.parse_args()
    emit([run(args.monitors, args.spread)], args.out)


if __name__ == "__main__":
    main()
