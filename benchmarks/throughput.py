"""Pings per second on one server core, against nginx `return 204` in the same run.

    python -m benchmarks.throughput [--monitors 100000] [--seconds 10] [--out FILE]

The ingest with its embedded database, and nginx, each get core 0 in turn; wrk gets
core 1. Two loads: keep-alive connections, and a new connection per request
(Connection: close). wrk rotates through every monitor's token, after a warm-up run that
gives every monitor its first ping. Then floods of check-ins on keep-alive connections,
``/start`` and ``/0`` (issue 12), against the plain pings of the same run: each is also
a row of the ping history, written to the same core's database.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

from . import harness
from .report import Result, emit


def run(monitors: int, seconds: float, connections: int) -> Result:
    if skipped := harness.without_wrk("throughput", "throughput"):
        return skipped
    server_pin, load_pin = harness.cores()
    workdir = Path(tempfile.mkdtemp(prefix="lastseen-throughput-"))
    tokens_file = workdir / "tokens.txt"
    figures: dict[str, Any] = {"monitors": monitors, "seconds": seconds, "connections": connections}
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
                for suffix in CHECK_INS:
                    runs["lastseen"][f"keep-alive {suffix}"] = harness.wrk(
                        ingest.port, tokens_file, seconds=seconds, connections=connections,
                        close=False, pin=load_pin, suffix=suffix,
                    )  # fmt: skip
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for server, loads in runs.items():
        for mode, load in loads.items():
            figures[f"{server}_{mode}"] = vars(load)
            ratio = ""
            if mode.removeprefix("keep-alive ") in CHECK_INS:  # against plain pings
                plain = runs[server]["keep-alive"].requests_per_s
                ratio = f"{load.requests_per_s / plain:.2f}x of plain"
                figures[f"ratio_{mode}"] = load.requests_per_s / plain
            elif server == "lastseen" and "nginx" in runs:
                ratio = f"{load.requests_per_s / runs['nginx'][mode].requests_per_s:.2f}x"
                figures[f"ratio_{mode}"] = load.requests_per_s / runs["nginx"][mode].requests_per_s
            rows.append((server, mode, f"{load.requests_per_s:,.0f}", f"{load.p50_ms:.2f} ms",
                         f"{load.p99_ms:.2f} ms", str(load.errors), ratio))  # fmt: skip
    if "nginx" not in runs:
        rows.append(("(nginx not installed: apt-get install nginx-light for the reference)",))
    title = f"throughput, {monitors:,} monitors, {seconds:g} s per run, one server core"
    return Result("throughput", title, rows, figures)


CHECK_INS = ("/start", "/0")


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
    parser.add_argument("--out")
    args = parser.parse_args()
    emit([run(args.monitors, args.seconds, args.connections)], args.out)


if __name__ == "__main__":
    main()
