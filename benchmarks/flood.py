"""Does a flood of unknown tokens slow valid pings? (docs/reliability.md, scenario 20)

    python -m benchmarks.flood [--monitors 100000] [--seconds 10] [--out FILE]

The ingest gets core 0, wrk core 1. A prober pings one real monitor 200 times a second
on its own keep-alive connection and records each answer's latency, in three runs: no
other load; wrk flooding valid pings at full speed (the reference: the server's own
capacity); wrk flooding pings of unknown tokens (404s) at full speed. If a 404 cost more
than a valid ping, the prober would fare worse in the third run than in the second.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from . import harness
from .probe import Prober
from .report import Result, emit


def run(monitors: int, seconds: float, connections: int) -> Result:
    if skipped := harness.without_wrk("flood", "404 flood"):
        return skipped
    server_pin, load_pin = harness.cores()
    workdir = Path(tempfile.mkdtemp(prefix="lastseen-flood-"))
    valid_file, unknown_file = workdir / "tokens.txt", workdir / "unknown.txt"
    unknown_file.write_text("".join(secrets.token_hex(32) + "\n" for _ in range(10_000)))
    figures: dict[str, Any] = {"monitors": monitors, "seconds": seconds,
                               "connections": connections}  # fmt: skip
    probes: dict[str, tuple[Prober, harness.Load | None]] = {}
    try:
        with harness.database(pin=server_pin) as dsn:
            tokens = harness.seed(dsn, monitors, valid_file)
            log = workdir / "ingest.log"
            with harness.ingest(dsn, tokens[-1], pin=server_pin, log=log) as ingest:
                harness.wrk(ingest.port, valid_file, seconds=min(15, 1 + monitors / 10_000),
                            connections=connections, close=False, pin=load_pin)  # fmt: skip
                for name, flood in [("quiet", None), ("valid flood", valid_file),
                                    ("404 flood", unknown_file)]:  # fmt: skip
                    prober = Prober(ingest.port, tokens[0])
                    prober.start()
                    if flood is None:
                        time.sleep(seconds)
                        load = None
                    else:
                        load = harness.wrk(
                            ingest.port, flood, seconds=seconds, connections=connections,
                            close=False, pin=load_pin,
                        )  # fmt: skip
                    prober.stopping.set()
                    prober.join(10)
                    probes[name] = (prober, load)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rows: list[tuple[str, ...]] = [
        ("run", "flood req/s", "flood p99", "probe pings", "probe p50", "probe p99",
         "errors (not counting the flood's 404s)",
         "probe p99 vs valid flood"),
    ]  # fmt: skip
    reference = probes["valid flood"][0].percentile(0.99)
    for name, (prober, load) in probes.items():
        p99 = prober.percentile(0.99)
        ratio = f"{p99 / reference:.2f}x" if name != "quiet" else ""
        figures[name.replace(" ", "_")] = {
            "flood": vars(load) if load else None, "probe_pings": len(prober.latencies),
            "probe_p50_ms": prober.percentile(0.5), "probe_p99_ms": p99,
            "probe_errors": prober.errors,
        }  # fmt: skip
        rows.append((
            name, f"{load.requests_per_s:,.0f}" if load else "",
            f"{load.p99_ms:.2f} ms" if load else "", str(len(prober.latencies)),
            f"{prober.percentile(0.5):.2f} ms", f"{p99:.2f} ms",
            str(prober.errors + (load.errors - load.non_2xx if load else 0)), ratio,
        ))  # fmt: skip
    figures["ratio_probe_p99_404_vs_valid"] = probes["404 flood"][0].percentile(0.99) / reference
    title = f"404 flood, {monitors:,} monitors, {seconds:g} s per run, one server core"
    return Result("flood", title, rows, figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--monitors", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--out", default="var/bench-flood.json")
    args = parser.parse_args()
    emit([run(args.monitors, args.seconds, args.connections)], args.out)


if __name__ == "__main__":
    main()
