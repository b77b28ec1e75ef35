"""How long the ingest takes from process start to answering pings for every monitor.

    python -m benchmarks.startup [--monitors 1000000] [--out FILE]

Seeds the monitors, starts `lastseen ingest`, and times until a ping to the last monitor
created answers 204 (the load is one stream, so the last one is the last loaded).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from . import harness
from .report import Result, emit


def run(monitors: int) -> Result:
    server_pin, _load_pin = harness.cores()
    workdir = Path(tempfile.mkdtemp(prefix="lastseen-startup-"))
    try:
        with harness.database() as dsn:
            tokens = harness.seed(dsn, monitors, workdir / "tokens.txt")
            with harness.ingest(
                dsn, tokens[-1], pin=server_pin, log=workdir / "ingest.log"
            ) as server:
                seconds = server.started_in
                first = harness.ping_status(server.port, tokens[0])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rows: list[tuple[str, ...]] = [
        ("monitors", f"{monitors:,}"),
        ("process start to serving every monitor", f"{seconds:.2f} s"),
        ("first monitor answers", str(first)),
    ]
    figures = {"monitors": monitors, "ready_seconds": seconds, "first_status": first}
    return Result("startup", f"startup with {monitors:,} monitors", rows, figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--monitors", type=int, default=1_000_000)
    parser.add_argument("--out")
    args = parser.parse_args()
    emit([run(args.monitors)], args.out)


if __name__ == "__main__":
    main()
