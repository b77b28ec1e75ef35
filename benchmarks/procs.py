"""Several ingest processes on one port: what a second process buys, what a hand-off
costs, and how soon a dead process's shards are owned again.

    python -m benchmarks.procs [--monitors 100000] [--seconds 10] [--out FILE]

Three runs of the same wrk load (keep-alive, rotating through every monitor's token),
each after a warm-up that gives every monitor its first ping:

- one ingest process pinned to core 0, wrk on core 1 (the reference);
- two ingest processes on one port, both pinned to core 0, wrk on core 1: the same CPU,
  now with about half the pings answered by the process that does not own the monitor
  and handed off. Their ratio is the hop tax (the issue's target: at least 0.9x the
  throughput, p99 at most 1.25x);
- the same two processes, but the load reaches only the first (the second owns half the
  shards and only receives hand-offs): what the hand-offs cost, apart from two event
  loops sharing one core;
- one, then two processes with no pinning and wrk beside them: on this 2-core machine
  wrk takes most of a core, so this says what a second process gains when the load
  generator shares the machine (on a host of its own, a second process has a core).

Each run also says the ingest processes' CPU time per ping (user + system, from /proc)
and how often the kernel preempted them: two processes on one core spend more CPU on
each ping than one, besides the hand-offs (two interpreters' working sets in one core's
caches, refilled at every switch between them; README, Scaling out).

Then the takeover: two processes, `kill -9` of one, seconds until the other owns all
1,024 shards (the default 8 s lease: its last renewal + 8 s + up to a quarter of it).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from . import harness
from .report import Result, emit


def run(monitors: int, seconds: float, connections: int) -> Result:
    if skipped := harness.without_wrk("procs", "ingest processes"):
        return skipped
    server_pin, load_pin = harness.cores()
    workdir = Path(tempfile.mkdtemp(prefix="lastseen-procs-"))
    tokens_file = workdir / "tokens.txt"
    figures: dict[str, Any] = {"monitors": monitors, "seconds": seconds, "connections": connections}
    loads: dict[str, harness.Load] = {}
    handed: dict[str, float] = {}
    cpu: dict[str, float] = {}  # the ingest processes' CPU seconds during the run
    switches: dict[str, int] = {}  # and their involuntary context switches
    # name: (each process's pin, wrk's pin, how many processes the load reaches)
    setups: dict[str, tuple[list[list[str]], list[str], int | None]] = {
        "1 process, core 0": ([server_pin], load_pin, None),
        "2 processes, core 0": ([server_pin, server_pin], load_pin, None),
        "1 serving, half handed off, core 0": ([server_pin, server_pin], load_pin, 1),
        "1 process, unpinned": ([[]], [], None),
        "2 processes, unpinned": ([[], []], [], None),
    }
    try:
        with harness.database() as dsn:
            tokens = harness.seed(dsn, monitors, tokens_file)
            for name, (pins, wrk_pin, serving) in setups.items():
                log = workdir / f"{len(loads)}.log"
                with harness.ingests(dsn, tokens[-1], pins, log=log, serving=serving) as servers:
                    port = servers[0].port
                    harness.wrk(port, tokens_file, seconds=min(15, 1 + monitors / 10_000),
                                connections=connections, close=False, pin=wrk_pin)  # fmt: skip
                    before = _handoffs(servers)
                    used = [harness.cpu_and_switches(s.process.pid) for s in servers]
                    loads[name] = harness.wrk(
                        port, tokens_file, seconds=seconds, connections=connections,
                        close=False, pin=wrk_pin,
                    )  # fmt: skip
                    handed[name] = _handoffs(servers) - before
                    after = [harness.cpu_and_switches(s.process.pid) for s in servers]
                    cpu[name] = sum(a[0] - b[0] for a, b in zip(after, used, strict=True))
                    switches[name] = sum(a[1] - b[1] for a, b in zip(after, used, strict=True))
            figures["takeover_seconds"] = _takeover(dsn, tokens[-1], workdir / "takeover.log")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    reference = {"core 0": loads["1 process, core 0"], "unpinned": loads["1 process, unpinned"]}
    rows: list[tuple[str, ...]] = [
        ("ingest", "requests/s", "p50", "p99", "errors", "handed off", "CPU a ping",
         "preempted/s", "vs 1 process")
    ]  # fmt: skip
    for name, load in loads.items():
        ref = reference["core 0" if "core 0" in name else "unpinned"]
        ratio = load.requests_per_s / ref.requests_per_s
        per_ping = cpu[name] / max(1, load.requests) * 1e6
        figures[name] = {**vars(load), "handed_off": handed[name], "ratio": ratio,
                         "p99_ratio": load.p99_ms / ref.p99_ms if ref.p99_ms else None,
                         "cpu_us_per_ping": per_ping,
                         "preempted_per_s": switches[name] / seconds}  # fmt: skip
        share = handed[name] / max(1, load.requests)
        rows.append((name, f"{load.requests_per_s:,.0f}", f"{load.p50_ms:.2f} ms",
                     f"{load.p99_ms:.2f} ms", str(load.errors), f"{share:.0%}",
                     f"{per_ping:.1f} us", f"{switches[name] / seconds:,.0f}",
                     f"{ratio:.2f}x, p99 {figures[name]['p99_ratio'] or 0:.2f}x"))  # fmt: skip
    tax = figures["2 processes, core 0"]
    figures["hop_tax"] = {"throughput": tax["ratio"], "p99": tax["p99_ratio"]}
    rows.append((f"takeover after kill -9: all shards owned again in "
                 f"{figures['takeover_seconds']:.1f} s (8 s lease)",))  # fmt: skip
    title = f"ingest processes on one port, {monitors:,} monitors, {seconds:g} s per run"
    return Result("procs", title, rows, figures)


def _handoffs(servers: list[harness.Server]) -> float:
    total = 0.0
    for server in servers:
        text = harness.metrics(server.admin)
        total += text.get("lastseen_handoffs_sent_total", 0.0)
    return total


def _takeover(dsn: str, probe: str, log: Path) -> float:
    with harness.ingests(dsn, probe, [[], []], log=log) as servers:
        victim, other = servers
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait()
        killed = time.monotonic()
        while harness.shards_owned(other.admin) < 1024:
            if time.monotonic() - killed > 60:
                raise RuntimeError(f"no takeover within 60 s; see {log}")
            time.sleep(0.05)
        return time.monotonic() - killed


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
