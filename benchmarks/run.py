"""Every benchmark, in the operator's size or a smoke size for CI.

    python -m benchmarks.run [--smoke] [--out FILE]

Prints a table per benchmark and writes all figures to one JSON file
(default var/bench.json). Smoke sizes only show the benchmarks still run; their
figures mean nothing.
"""

from __future__ import annotations

import argparse

from . import core, flood, procs, startup, throughput, wal
from .report import emit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds in all")
    parser.add_argument("--out", default="var/bench.json")
    args = parser.parse_args()
    if args.smoke:
        results = [
            core.run(monitors=5_000, spread=1.0),
            startup.run(monitors=2_000),
            throughput.run(monitors=1_000, seconds=1, connections=8, rounds=1),
            flood.run(monitors=1_000, seconds=1, connections=8),
            procs.run(monitors=1_000, seconds=1, connections=8),
            wal.run(monitors=1_000, rounds=2, interval=1.5, seen=0.5),
        ]
    else:
        results = [
            core.run(monitors=1_000_000, spread=60.0),
            startup.run(monitors=1_000_000),
            throughput.run(monitors=100_000, seconds=10, connections=64),
            flood.run(monitors=100_000, seconds=10, connections=64),
            procs.run(monitors=100_000, seconds=10, connections=64, rounds=3),
            wal.run(monitors=100_000, rounds=2, interval=30.0, seen=10.0),
        ]
    emit(results, args.out)


if __name__ == "__main__":
    main()
