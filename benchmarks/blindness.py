"""Blindness (ingest/sight.py) against real traffic: what normal jitter looks like to the
guard, and what a cut and a partial outage do.

    python -m benchmarks.blindness [--monitors 20000] [--interval 30] [--grace 5]
                                   [--rounds 3] [--out FILE]

One ingest process on an embedded PostgreSQL, `monitors` monitors each pinged once per
`interval` from this machine (spread over it in quarter-second steps, pipelined over
keep-alive connections: the pacing is the client's real scheduling, jitter and all):

1. healthy, `rounds` intervals: every second the guard's last window is read from the
   ingest's metrics (monitors late, pings on time for the same seconds); the worst share
   late / (late + on time) and the most monitors late at once are what the defaults
   (0.8, 50) must stay clear of;
2. a cut: every ping stops for an interval + grace + 15 s; how long until the process is
   blind, how many misses it undid, and how many incidents reached the database (0);
3. back: pings resume; how long until it sees again, and incidents (0);
4. a partial outage: a third of the fleet stops for good; the process must not go
   blind, and every one of them must alert.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import asyncpg

from core.seed import seed_monitors

from . import harness
from .report import Result, emit
from .wal import _ping_all


class Pinger:
    """Each live token once per `interval`, in quarter-second steps, from a thread."""

    def __init__(self, port: int, tokens: list[str], interval: float) -> None:
        self.port, self.tokens, self.interval = port, tokens, interval
        self.live = list(range(len(tokens)))
        self.paused = threading.Event()
        self.done = threading.Event()
        self.answered = 0

    def run(self) -> None:
        steps = max(1, int(self.interval * 4))
        started, n = time.monotonic(), 0
        while not self.done.is_set():
            part = n % steps
            if not self.paused.is_set():
                batch = [self.tokens[k] for k in self.live if k % steps == part]
                self.answered += _ping_all(self.port, batch)
            n += 1
            self.done.wait(max(0.0, started + n * self.interval / steps - time.monotonic()))


def _seed(dsn: str, n: int, interval: int, grace: int) -> list[str]:
    async def go() -> list[str]:
        conn = await asyncpg.connect(dsn)
        try:
            seeded = await seed_monitors(conn, n, interval_sec=interval, grace_sec=grace)
            return [m.token for m in seeded]
        finally:
            await conn.close()

    return asyncio.run(go())


def _incidents(dsn: str) -> int:
    async def go() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            n: int = await conn.fetchval(
                "SELECT count(*) FROM monitor_events WHERE kind = 'incident_opened'"
            )
            return n
        finally:
            await conn.close()

    return asyncio.run(go())


def _watch(admin: int, seconds: float, until: Any = None) -> tuple[list[dict[str, float]], float]:
    """Sample the metrics every second for `seconds` (or until `until(sample)`)."""
    samples, started = [], time.monotonic()
    while time.monotonic() - started < seconds:
        m = {k.removeprefix("lastseen_"): v for k, v in harness.metrics(admin).items()}
        samples.append(m)
        if until is not None and m and until(m):
            break
        time.sleep(1.0)
    return samples, time.monotonic() - started


def run(monitors: int, interval: int, grace: int, rounds: int) -> Result:
    server_pin, _load = harness.cores()
    workdir = Path(tempfile.mkdtemp(prefix="lastseen-blind-"))
    figures: dict[str, Any] = {"monitors": monitors, "interval": interval, "grace": grace}
    try:
        with harness.database(pin=server_pin) as dsn:
            tokens = _seed(dsn, monitors, interval, grace)
            log = workdir / "ingest.log"
            with harness.ingest(dsn, tokens[-1], pin=server_pin, log=log) as ingest:
                pinger = Pinger(ingest.port, tokens, interval)
                thread = threading.Thread(target=pinger.run, daemon=True)
                thread.start()
                try:
                    figures.update(_phases(dsn, ingest.admin, pinger, interval, grace, rounds))
                finally:
                    pinger.done.set()
                    thread.join(10)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    f = figures
    rows: list[tuple[str, ...]] = [
        ("healthy: worst late / (late + on time) in a 10 s window", f"{f['worst_share']:.3f}",
         "blind at 0.8"),
        ("healthy: most monitors late at once", f"{f['most_late']:.0f}", "blind from 50"),
        ("a cut: seconds from the last ping to blind", f"{f['blind_after']:.1f}",
         f"first misses {grace} s after (grace)"),
        ("a cut: misses undone / incidents written", f"{f['undone']:.0f} / {f['cut_incidents']}",
         "0 incidents"),
        ("back: seconds from the first ping to seeing again", f"{f['sighted_after']:.1f}", ""),
        ("back: incidents written", f"{f['back_incidents']}", "0"),
        ("a third of the fleet stops: blind? / incidents",
         f"{'yes' if f['partial_blind'] else 'no'} / {f['partial_incidents']}",
         f"no / {f['partial_dead']}"),
    ]  # fmt: skip
    title = (
        f"Blindness, {monitors:,} monitors on {interval} s (grace {grace} s), real traffic,"
        " one ingest process"
    )
    return Result("blindness", title, rows, figures)


def _phases(
    dsn: str, admin: int, pinger: Pinger, interval: int, grace: int, rounds: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # 1. Healthy: the first interval makes everyone up; then the guard's windows.
    time.sleep(interval + grace + 2)
    samples, _ = _watch(admin, rounds * interval)
    shares = [
        s["sight_late"] / (s["sight_late"] + s["sight_heard"])
        for s in samples
        if s and s["sight_late"] + s["sight_heard"]
    ]
    out["worst_share"] = max(shares, default=0.0)
    out["most_late"] = max((s.get("sight_late", 0.0) for s in samples), default=0.0)
    out["healthy_windows"] = len(shares)
    out["healthy_blind"] = any(s.get("blind") for s in samples)
    # 2. The cut.
    pinger.paused.set()
    cut = time.monotonic()
    samples, took = _watch(admin, interval + grace + 30, lambda m: m.get("blind") == 1)
    out["blind_after"] = took if samples and samples[-1].get("blind") == 1 else float("nan")
    time.sleep(max(0.0, cut + interval + grace + 15 - time.monotonic()))
    out["undone"] = harness.metrics(admin).get("lastseen_misses_undone_total", 0.0)
    out["cut_incidents"] = _incidents(dsn)
    # 3. Back.
    pinger.paused.clear()
    samples, took = _watch(admin, 2 * interval, lambda m: m.get("blind") == 0)
    out["sighted_after"] = took
    time.sleep(interval + grace + 12)  # a whole interval + grace + the window, from back
    out["back_incidents"] = _incidents(dsn) - out["cut_incidents"]
    # 4. A third stops for good.
    before = _incidents(dsn)
    dead = set(range(0, len(pinger.tokens), 3))
    pinger.live = [k for k in pinger.live if k not in dead]
    samples, _ = _watch(admin, interval + grace + 15)
    out["partial_blind"] = any(s.get("blind") for s in samples)
    out["partial_incidents"] = _incidents(dsn) - before
    out["partial_dead"] = len(dead)
    out["answered_204"] = pinger.answered
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--monitors", type=int, default=20_000)
    parser.add_argument("--interval", type=int, default=30)
    parser.add_argument("--grace", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args()
    emit([run(args.monitors, args.interval, args.grace, args.rounds)], args.out)


if __name__ == "__main__":
    main()
