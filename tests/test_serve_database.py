"""`lastseen serve` keeps its embedded PostgreSQL running (issue 16, item 7): kill -9 of
the postmaster used to leave it down for good, the API answering 500 and /healthz "ok"."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from core.pg import free_port

from .support.exposure import EXPOSURE
from .support.serving import answers, stop, wait_until

pytestmark = pytest.mark.faults


def test_a_killed_embedded_postgres_is_started_again(tmp_path: Path):
    ingest, admin, control = free_port(), free_port(9), free_port()  # admin: per process, + worker
    env = {k: v for k, v in os.environ.items() if k != "LASTSEEN_DATABASE_URL"}
    env["LASTSEEN_CONTROL_LISTEN"] = f"127.0.0.1:{control}"
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "lastseen", "serve", "--data-dir", str(tmp_path / "data"),
             "--listen", f"127.0.0.1:{ingest}", "--admin-listen", f"127.0.0.1:{admin}"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    pat = ""
    try:
        origin = f"http://127.0.0.1:{ingest}"
        wait_until(lambda: answers(f"{origin}/api/v1/openapi.json"), 90)
        pat = (tmp_path / "data" / "owner-token").read_text().strip()
        me = f"{origin}/api/v1/me"
        headers = {"authorization": f"Bearer {pat}"}
        assert httpx.get(me, headers=headers).status_code == 200
        pid_file = tmp_path / "data" / "pg" / "postmaster.pid"
        postmaster = int(pid_file.read_text().splitlines()[0])
        killed = time.monotonic()
        os.kill(postmaster, signal.SIGKILL)
        seen: list[int] = []
        health: list[int] = []
        deadline = killed + 60
        while time.monotonic() < deadline:
            seen.append(httpx.get(me, headers=headers, timeout=5).status_code)
            health.append(httpx.get(f"{origin}/healthz", timeout=5).status_code)
            if seen[-1] == 200 and seen.count(200) > 1:
                break
            time.sleep(0.1)
        back = time.monotonic() - killed
        ingest_health = httpx.get(f"http://127.0.0.1:{admin}/healthz", timeout=5).json()
    finally:
        stop(process, signal.SIGINT, within=60)
        output = log_path.read_text(errors="replace")
        EXPOSURE.text("lastseen serve output", "process outputs", output, allowed=(pat,))
    assert seen[-1] == 200, (seen, output[-3000:])
    assert 500 not in seen, seen  # while it was down: 503, saying so
    assert health[-1] == 200
    assert "the embedded PostgreSQL has stopped; starting it again" in output
    assert "Traceback" not in output, output[-3000:]
    # Stopped as usual afterwards: the restarted cluster too.
    assert process.returncode == 0
    assert not pid_file.exists()
    print(
        f"\nkill -9 of the embedded postmaster: the API answered again {back:.1f} s later;"
        f" meanwhile {sorted(set(seen))} from the API and {sorted(set(health))} from /healthz"
    )
    # The ingest's own health says what was down, and is up again.
    assert ingest_health["down"] in ([], ["database"])
