"""Several ingest processes on one port: what a second process buys, what a hand-off
costs, and how soon a dead process's shards are owned again.

    python -m benchmarks.procs [--monitors 100000] [--seconds 10] [--rounds 1] [--out FILE]

Three runs of the same wrk load (keep-alive, rotating through every monitor's token),
each after a warm-up that gives every monitor its first ping:

- one ingest process pinned to core 0, wrk on core 1 (the reference);
- two ingest processes on one port, both pinned to core 0, wrk on core 1: the same CPU,
  now with about half the pings answered by the process that does not own the monitor
  and handed off. Their ratio is the hop tax (the issue's target: at least 0.9x the
  throughput, p99 at most 1.25x). Started as `lastseen serve` starts them: one
  `lastseen ingest --procs 2` forks both (lastseen/children.py);
- the same two processes, but each started as a command of its own (as two hosts' are):
  each then has an address layout of its own, and two interpreters whose code is at
  different addresses cost each other about a fifth on one core; against the forked
  pair, round by round, what one layout buys;
- two processes on core 0 that share nothing but the port and the core: each a cluster
  of its own, on a copy of the database (the same monitors and tokens), so no hand-offs
  and no shared shards, each started on its own. The pair above against this pair, round
  by round, is the cluster's own share of the hop tax;
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
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from . import harness
from .report import Result, emit


def run(monitors: int, seconds: float, connections: int, rounds: int = 1) -> Result:
    """`rounds` > 1: the setups in turn, that many times; each figure is the median round
    (its ratio against the same round's reference) with the range of the ratios, since
    one run on a shared machine can be a quarter off either way."""
    if skipped := harness.without_wrk("procs", "ingest processes"):
        return skipped
    server_pin, load_pin = harness.cores()
    workdir = Path(tempfile.mkdtemp(prefix="lastseen-procs-"))
    tokens_file = workdir / "tokens.txt"
    figures: dict[str, Any] = {"monitors": monitors, "seconds": seconds,
                               "connections": connections, "rounds": rounds}  # fmt: skip
    # Per setup, per round: the load, pings handed off, the ingests' CPU seconds and
    # their involuntary context switches during it.
    runs: dict[str, list[tuple[harness.Load, float, float, int]]] = {}
    # name: (each process's pin, wrk's pin, how many processes the load reaches, whether
    # each process has a database of its own, whether one command forks them all)
    both = [server_pin, server_pin]
    setups: dict[str, tuple[list[list[str]], list[str], int | None, bool, bool]] = {
        "1 process, core 0": ([server_pin], load_pin, None, False, False),
        PAIR: (both, load_pin, None, False, True),
        STARTED_EACH: (both, load_pin, None, False, False),
        APART: (both, load_pin, None, True, False),
        "1 serving, half handed off, core 0": (both, load_pin, 1, False, False),
        "1 process, unpinned": ([[]], [], None, False, False),
        "2 processes, unpinned": ([[], []], [], None, False, True),
    }
    try:
        with harness.database() as dsn:
            tokens = harness.seed(dsn, monitors, tokens_file)
            with harness.database_copy(dsn) as copy:
                for _ in range(rounds):
                    for name, (pins, wrk_pin, serving, apart, forked) in setups.items():
                        if apart and copy is None:
                            continue  # the server cannot copy a database
                        log = workdir / f"{name}.log"
                        ingests = harness.ingests(
                            dsn, tokens[-1], pins, log=log, serving=serving,
                            apart=copy if apart else None, forked=forked,
                        )  # fmt: skip
                        with ingests as servers:
                            one = _measure(
                                servers, tokens_file, monitors, seconds, connections, wrk_pin
                            )
                        runs.setdefault(name, []).append(one)
            figures["takeover_seconds"] = _takeover(dsn, tokens[-1], workdir / "takeover.log")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rows: list[tuple[str, ...]] = [
        ("ingest", "requests/s", "p50", "p99", "errors", "handed off", "CPU a ping",
         "preempted/s", "vs 1 process")
    ]  # fmt: skip
    for name, measured in runs.items():
        reference_name = "1 process, core 0" if "core 0" in name else "1 process, unpinned"
        reference = runs[reference_name]
        ratios = _against(runs, name, reference_name)
        p99_ratios = [m[0].p99_ms / r[0].p99_ms
                      for m, r in zip(measured, reference, strict=True) if r[0].p99_ms]  # fmt: skip
        middle = sorted(range(rounds), key=lambda i: ratios[i])[rounds // 2]
        load, handed, cpu, switches = measured[middle]
        ratio, p99_ratio = statistics.median(ratios), statistics.median(p99_ratios or [0.0])
        per_ping = cpu / max(1, load.requests) * 1e6
        figures[name] = {**vars(load), "handed_off": handed, "ratio": ratio,
                         "ratios": ratios, "p99_ratio": p99_ratio,
                         "cpu_us_per_ping": per_ping,
                         "preempted_per_s": switches / seconds}  # fmt: skip
        spread = f" ({min(ratios):.2f}-{max(ratios):.2f})" if rounds > 1 else ""
        rows.append((name, f"{load.requests_per_s:,.0f}", f"{load.p50_ms:.2f} ms",
                     f"{load.p99_ms:.2f} ms", str(load.errors),
                     f"{handed / max(1, load.requests):.0%}", f"{per_ping:.1f} us",
                     f"{switches / seconds:,.0f}",
                     f"{ratio:.2f}x{spread}, p99 {p99_ratio:.2f}x"))  # fmt: skip
    tax = figures[PAIR]
    figures["hop_tax"] = {"throughput": tax["ratio"], "p99": tax["p99_ratio"]}
    layout = _against(runs, PAIR, STARTED_EACH)
    figures["hop_tax"]["forked_vs_started_each"] = statistics.median(layout)
    rows.append((f"two processes forked by one against the same two started each on its own"
                 f" (what one address layout buys): {_spread(layout)}",))  # fmt: skip
    if APART in runs:
        # The cluster's own share of the hop tax: two processes of one cluster against two
        # that share nothing but the core, both pairs started each on its own.
        ours = _against(runs, STARTED_EACH, APART)
        figures["hop_tax"]["vs_apart"] = statistics.median(ours)
        rows.append((f"two processes of one cluster on core 0 against two apart, all started"
                     f" each on its own (the cluster's own share of the hop tax):"
                     f" {_spread(ours)}",))  # fmt: skip
    rows.append((f"takeover after kill -9: all shards owned again in "
                 f"{figures['takeover_seconds']:.1f} s (8 s lease)",))  # fmt: skip
    title = (f"ingest processes on one port, {monitors:,} monitors, {seconds:g} s per run"
             + (f", the median of {rounds} rounds" if rounds > 1 else ""))  # fmt: skip
    return Result("procs", title, rows, figures)


PAIR = "2 processes, core 0"
STARTED_EACH = "2 processes started each on its own, core 0"
APART = "2 processes apart (a database each), core 0"


def _against(runs: dict[str, list[Any]], name: str, reference: str) -> list[float]:
    """Round by round, `name`'s throughput against `reference`'s."""
    return [m[0].requests_per_s / r[0].requests_per_s
            for m, r in zip(runs[name], runs[reference], strict=True)]  # fmt: skip


def _spread(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def _measure(
    servers: list[harness.Server],
    tokens_file: Path,
    monitors: int,
    seconds: float,
    connections: int,
    wrk_pin: list[str],
) -> tuple[harness.Load, float, float, int]:
    port = servers[0].port
    harness.wrk(port, tokens_file, seconds=min(15, 1 + monitors / 10_000),
                connections=connections, close=False, pin=wrk_pin)  # fmt: skip
    before = _handoffs(servers)
    used = [harness.cpu_and_switches(s.pid or s.process.pid) for s in servers]
    load = harness.wrk(port, tokens_file, seconds=seconds, connections=connections,
                       close=False, pin=wrk_pin)  # fmt: skip
    handed = _handoffs(servers) - before
    after = [harness.cpu_and_switches(s.pid or s.process.pid) for s in servers]
    cpu = sum(a[0] - b[0] for a, b in zip(after, used, strict=True))
    switches = sum(a[1] - b[1] for a, b in zip(after, used, strict=True))
    return load, handed, cpu, switches


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
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out")
    args = parser.parse_args()
    emit([run(args.monitors, args.seconds, args.connections, args.rounds)], args.out)


if __name__ == "__main__":
    main()
