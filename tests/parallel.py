"""`make test`'s pytest: two sessions at once, so that the tests that mostly wait in real
time (a 30 s interval running out, leases expiring, floods timing out) overlap with the
ones that mostly compute (hypothesis, fuzzing, browsers). On the 2-core machine this cuts
the suite from about 10.5 minutes to about 7.

    python -m tests.parallel [pytest options]

The real-time session's output is shown after the other's; the exit status is the
worse of the two. Each session has its own PostgreSQL (or its own template on
LASTSEEN_DATABASE_URL) and its own secrets check (tests/support/exposure.py).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile

REAL_TIME = [
    "tests/cluster",
    "tests/test_kill_ingest.py",
    "tests/test_alerting_e2e.py",
    "tests/test_checkins_e2e.py",
    "tests/security/test_connection_flood.py",
    "tests/security/test_idle_flood.py",
    "tests/security/test_slowloris.py",
    "tests/security/test_forward_flood.py",
    "tests/security/test_404_flood.py",
    "tests/ingest/test_database_outage.py",
    "tests/control/test_worker_kills.py",
    "tests/test_pingable.py",
    "tests/test_serve_database.py",
    "tests/test_backup.py",
]


def main() -> int:
    options = sys.argv[1:]
    pytest = [sys.executable, "-m", "pytest"]
    with tempfile.TemporaryFile("w+") as log:
        waiting = subprocess.Popen(
            [*pytest, "-q", "-p", "no:cacheprovider", *options, *REAL_TIME],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            rest = subprocess.run(
                [*pytest, "-q", *options, *(f"--ignore={path}" for path in REAL_TIME)]
            ).returncode
            waited = waiting.wait()
        finally:
            if waiting.poll() is None:
                waiting.terminate()
                waiting.wait()
        log.seek(0)
        print(f"\n-- the real-time tests ({', '.join(REAL_TIME)}) --", flush=True)
        sys.stdout.write(log.read())
    print(f"\n-- pytest sessions: the rest exited {rest}, the real-time ones {waited} --")
    return rest or waited


if __name__ == "__main__":
    sys.exit(main())
