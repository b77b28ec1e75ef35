"""`make test`'s pytest: two sessions at once, so that the tests that mostly wait in real
time (a 30 s interval running out, leases expiring, floods timing out, a cron minute
coming round) overlap with the ones that mostly compute (hypothesis, fuzzing, browsers).

    python -m tests.parallel [--before CMD] [--beside CMD] [pytest options]

`--beside CMD` runs from the start beside everything (make test: the benchmarks' smoke
run, mostly starting processes and waiting); `--before CMD` runs after the real-time
session has started and before the computing one (make test: lint and types, which
would compete with it for a core). On the 2-core machine the whole of `make test` fits in
about the real-time session's length instead of the sum of the three phases.

Each command's and the real-time session's output is shown after the rest; the exit
status is the worst of them all. Each session has its own PostgreSQL (or its own
template on LASTSEEN_DATABASE_URL) and its own secrets check (tests/support/exposure.py).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import tempfile
from typing import IO

# In this order: those that wait most and time least come first, while lint, types and
# the benchmarks' smoke run still take turns on the cores.
REAL_TIME = [
    "tests/test_backup.py",
    "tests/test_serve_database.py",
    "tests/test_checkins_e2e.py",
    "tests/test_alerting_e2e.py",
    "tests/test_pingable.py",
    "tests/control/test_worker_kills.py",
    "tests/ingest/test_database_outage.py",
    "tests/security/test_connection_flood.py",
    "tests/security/test_idle_flood.py",
    "tests/security/test_slowloris.py",
    "tests/security/test_forward_flood.py",
    "tests/security/test_404_flood.py",
    "tests/test_kill_ingest.py",
    "tests/cluster",
]


def _options(argv: list[str]) -> tuple[list[str], list[str], list[str]]:
    before: list[str] = []
    beside: list[str] = []
    rest: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--before":
            before = shlex.split(next(args))
        elif arg == "--beside":
            beside = shlex.split(next(args))
        else:
            rest.append(arg)
    return before, beside, rest


def main() -> int:
    before, beside, options = _options(sys.argv[1:])
    pytest = [sys.executable, "-m", "pytest"]
    background: list[tuple[str, subprocess.Popen[bytes], IO[str]]] = []
    statuses: list[tuple[str, int]] = []
    try:
        for title, command in [
            ("the real-time tests", [*pytest, "-q", "-p", "no:cacheprovider", *options,
                                     *REAL_TIME]),
            (" ".join(beside), beside),
        ]:  # fmt: skip
            if command:
                log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed below)
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
                background.append((title, process, log))
        if before:
            statuses.append((" ".join(before), subprocess.run(before).returncode))
        rest = [*pytest, "-q", *options, *(f"--ignore={path}" for path in REAL_TIME)]
        statuses.append(("the rest of the tests", subprocess.run(rest).returncode))
        statuses += [(title, process.wait()) for title, process, _ in background]
    finally:
        for _, process, _log in background:
            if process.poll() is None:
                process.terminate()
                process.wait()
    for title, _, output in background:
        output.seek(0)
        print(f"\n-- {title} --", flush=True)
        sys.stdout.write(output.read())
        output.close()
    print("\n-- exit statuses: " + ", ".join(f"{t}: {code}" for t, code in statuses) + " --")
    return next((code for _, code in statuses if code != 0), 0)


if __name__ == "__main__":
    sys.exit(main())
