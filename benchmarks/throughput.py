"""Pings per second on one server core, against nginx `return 204` in the same run.

    python -m benchmarks.throughput [--monitors 100000] [--seconds 10] [--rounds 3] [--out FILE]

The ingest with its embedded database, and nginx, each get core 0 in turn; wrk gets
core 1. Two loads: keep-alive connections, and a new connection per request
(Connection: close). wrk rotates through every monitor's token, after a warm-up run that
gives every monitor its first ping. Then floods of check-ins on keep-alive connections,
``/start`` and ``/0`` (issue 12), against plain pings: each is also a row of the ping
history, written to the same core's database. They run in `rounds` (plain, /start, /0
in turn; the median of each, and the range of the ratio), and each says what a request
cost in CPU: the ingest's and its PostgreSQL's (from /proc), the figure the machine's
noise moves least. The same rounds again at one paced rate for all (half the plain
floods' rate): the ingest's CPU a request at equal load, the fast path's own cost (at
saturation a slower flood also means fewer pings a loop pass, each dearer, and the
database's work on the core evicts the ingest's caches: both move the ingest's share).
Then like for like: an ingest that records plain pings too
(``LASTSEEN_PING_HISTORY_PLAIN=1``, every ping a row, as issue 12's history has it), so
that a check-in is measured against a ping that is written as well; by default a plain
ping is no row (its time is the seen log's) and the first rounds' ratio is the price of
the row. Each round takes the floods in a turned order (the history's index grows over
the run: the later flood of a round would pay more).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import harness
from .report import Result, emit


def run(monitors: int, seconds: float, connections: int, rounds: int = 3) -> Result:
    if skipped := harness.without_wrk("throughput", "throughput"):
        return skipped
    server_pin, load_pin = harness.cores()
    workdir = Path(tempfile.mkdtemp(prefix="lastseen-throughput-"))
    tokens_file = workdir / "tokens.txt"
    figures: dict[str, Any] = {"monitors": monitors, "seconds": seconds,
                               "connections": connections, "rounds": rounds}  # fmt: skip
    flood: dict[str, list[Flood]] = {}
    paced: dict[str, list[Flood]] = {}
    recorded: dict[str, list[Flood]] = {}
    rows: list[tuple[str, ...]] = [
        ("server", "mode", "requests/s", "p50", "p99", "errors", "vs nginx")
    ]
    try:
        with harness.database(pin=server_pin) as dsn:
            tokens = harness.seed(dsn, monitors, tokens_file)
            runs: dict[str, dict[str, harness.Load]] = {}
            with harness.nginx(server_pin) as nginx:
                if nginx is not None:
                    runs["nginx"] = _loads(nginx.port, tokens_file, seconds, connections, load_pin)
            log = workdir / "ingest.log"
            with harness.ingest(dsn, tokens[-1], pin=server_pin, log=log) as ingest:
                figures["ingest_ready_seconds"] = ingest.started_in
                # Warm up: every monitor's first ping (pending -> up) writes an event; a
                # fleet's steady state is pings to monitors that are up.
                harness.wrk(ingest.port, tokens_file, seconds=min(15, 1 + monitors / 10_000),
                            connections=connections, close=False, pin=load_pin)  # fmt: skip
                runs["lastseen"] = _loads(ingest.port, tokens_file, seconds, connections, load_pin)
                floods = _Floods(dsn, ingest, tokens_file, seconds, connections, load_pin)
                floods.rounds(flood, rounds)
                rate = statistics.median(f.load.requests_per_s for f in flood[""]) / 2
                figures["paced_rate"] = rate
                floods.rounds(paced, rounds, rate)
            with harness.ingest(dsn, tokens[-1], pin=server_pin, log=log,
                                env={"LASTSEEN_PING_HISTORY_PLAIN": "1"}) as ingest:  # fmt: skip
                _Floods(dsn, ingest, tokens_file, seconds, connections, load_pin).rounds(
                    recorded, rounds
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for server, loads in runs.items():
        for mode, load in loads.items():
            figures[f"{server}_{mode}"] = vars(load)
            ratio = ""
            if server == "lastseen" and "nginx" in runs:
                ratio = f"{load.requests_per_s / runs['nginx'][mode].requests_per_s:.2f}x"
                figures[f"ratio_{mode}"] = load.requests_per_s / runs["nginx"][mode].requests_per_s
            rows.append((server, mode, f"{load.requests_per_s:,.0f}", f"{load.p50_ms:.2f} ms",
                         f"{load.p99_ms:.2f} ms", str(load.errors), ratio))  # fmt: skip
    rows += _flood_rows(flood, figures, "flood", "")
    rate = figures.get("paced_rate", 0.0)
    rows += _flood_rows(paced, figures, "paced flood", f"paced at {rate:,.0f}/s: ")
    rows += _flood_rows(recorded, figures, "recorded flood", "plain pings recorded too: ")
    if "nginx" not in runs:
        rows.append(("(nginx not installed: apt-get install nginx-light for the reference)",))
    title = f"throughput, {monitors:,} monitors, {seconds:g} s per run, one server core"
    return Result("throughput", title, rows, figures)


CHECK_INS = ("/start", "/0")


@dataclass
class Flood:
    """One keep-alive flood of plain pings or check-ins, and the CPU it cost."""

    load: harness.Load
    ingest_us: float  # the ingest's CPU per request, µs
    database_us: float | None  # its PostgreSQL's (None: not the embedded cluster)

    @property
    def us(self) -> float:
        return self.ingest_us + (self.database_us or 0.0)


@dataclass(frozen=True)
class _Floods:
    """Where and how the floods run: the ingest (and its database), the tokens, and
    wrk's length, connections and core."""

    dsn: str
    ingest: harness.Server
    tokens_file: Path
    seconds: float
    connections: int
    pin: list[str]

    def flood(self, suffix: str, rate: float | None = None) -> Flood:
        """One flood of `suffix` pings ("" for plain ones), at most `rate` a second."""
        pid = self.ingest.process.pid
        cpu, db = harness.cpu_and_switches(pid)[0], harness.database_cpu(self.dsn)
        load = harness.wrk(self.ingest.port, self.tokens_file, seconds=self.seconds,
                           connections=self.connections, close=False, pin=self.pin,
                           suffix=suffix, rate=rate)  # fmt: skip
        requests = max(1.0, load.requests_per_s * self.seconds)
        cpu = harness.cpu_and_switches(pid)[0] - cpu
        db_after = harness.database_cpu(self.dsn)
        database = None if db is None or db_after is None else (db_after - db) * 1e6 / requests
        return Flood(load, cpu * 1e6 / requests, database)

    def rounds(self, into: dict[str, list[Flood]], rounds: int, rate: float | None = None) -> None:
        """`rounds` of a plain flood and each check-in's, in turn (so that the machine's
        drift falls on all alike), each round starting one further along; at most `rate`
        requests a second if given."""
        kinds = ("", *CHECK_INS)
        for turn in range(rounds):
            for k in range(len(kinds)):
                suffix = kinds[(turn + k) % len(kinds)]
                into.setdefault(suffix, []).append(self.flood(suffix, rate))


def _flood_rows(
    flood: dict[str, list[Flood]], figures: dict[str, Any], key: str, setting: str
) -> list[tuple[str, ...]]:
    """The check-in floods against plain pings: medians, and each ratio's range, as
    figures[f"{key} {flood}"]; the rows name `setting` (empty for the default one)."""
    if not flood:
        return []
    head = ("lastseen", f"{setting}keep-alive floods (median of rounds)", "requests/s", "p50",
            "p99", "errors", "CPU a request: ingest + PostgreSQL", "vs plain (range)")  # fmt: skip
    rows: list[tuple[str, ...]] = [head]
    plain = flood[""]
    for suffix, runs in flood.items():
        rate = statistics.median(f.load.requests_per_s for f in runs)
        cost = statistics.median(f.us for f in runs)
        name = suffix or "plain"
        figure = {"requests_per_s": rate, "cpu_us": cost,
                  "ingest_us": statistics.median(f.ingest_us for f in runs),
                  "database_us": statistics.median(f.database_us or 0.0 for f in runs),
                  "p99_ms": statistics.median(f.load.p99_ms for f in runs),
                  "errors": sum(f.load.errors for f in runs)}  # fmt: skip
        versus = ""
        if suffix:
            ratios = [f.load.requests_per_s / p.load.requests_per_s
                      for f, p in zip(runs, plain, strict=True)]  # fmt: skip
            figure["ratio"] = statistics.median(ratios)
            figure["cpu_ratio"] = cost / statistics.median(p.us for p in plain)
            figure["ingest_ratio"] = figure["ingest_us"] / statistics.median(
                p.ingest_us for p in plain
            )
            versus = (f"{figure['ratio']:.2f}x ({min(ratios):.2f}-{max(ratios):.2f}),"
                      f" CPU {figure['cpu_ratio']:.2f}x, the ingest's"
                      f" {figure['ingest_ratio']:.2f}x")  # fmt: skip
        figures[f"{key} {name}"] = figure
        cpu = f"{figure['ingest_us']:.1f} + {figure['database_us']:.1f} µs"
        p50 = statistics.median(f.load.p50_ms for f in runs)
        rows.append(("lastseen", f"keep-alive {name}", f"{rate:,.0f}", f"{p50:.2f} ms",
                     f"{figure['p99_ms']:.2f} ms", str(figure["errors"]), cpu, versus))  # fmt: skip
    return rows


def _loads(
    port: int, tokens_file: Path, seconds: float, connections: int, pin: list[str]
) -> dict[str, harness.Load]:
    return {
        "keep-alive": harness.wrk(port, tokens_file, seconds=seconds, connections=connections,
                                  close=False, pin=pin),
        "connection-per-request": harness.wrk(port, tokens_file, seconds=seconds,
                                              connections=connections, close=True, pin=pin),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--monitors", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="of the check-in floods")
    parser.add_argument("--out")
    args = parser.parse_args()
    emit([run(args.monitors, args.seconds, args.connections, args.rounds)], args.out)


if __name__ == "__main__":
    main()
