"""`lastseen serve` end to end: first-run owner token, provision like the docs, ping, stop."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import httpx

from core.pg import free_port
from lastseen.supervise import default_ingest_procs

from .support.exposure import EXPOSURE
from .support.serving import answers, wait_until


def test_serve_provisions_and_pings_like_the_docs(database_url, tmp_path: Path):
    ingest, admin, control = free_port(), free_port(9), free_port()  # admin: per process, + worker
    env = {**os.environ, "LASTSEEN_DATABASE_URL": database_url,
           "LASTSEEN_CONTROL_LISTEN": f"127.0.0.1:{control}"}  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "lastseen", "serve", "--data-dir", str(tmp_path),
         "--listen", f"127.0.0.1:{ingest}", "--admin-listen", f"127.0.0.1:{admin}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        # One origin: the API through the ingest, as BASE in the docs.
        api = f"http://127.0.0.1:{ingest}/api/v1"
        wait_until(lambda: answers(f"{api}/openapi.json"), 30)
        token_file = tmp_path / "owner-token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        pat = token_file.read_text().strip()
        headers = {"authorization": f"Bearer {pat}", "content-type": "application/json"}
        # The docs' Python snippet (provision_heartbeat, then ping), BASE = lastseen.
        create = httpx.post(f"{api}/monitors", headers=headers, json={
            "name": "nightly", "url": "internal://nightly", "type": "heartbeat",
            "intervalSec": 60, "timeoutMs": 10000, "heartbeatGraceSec": 60,
            "alertEmail": "ops@example.test",
        })  # fmt: skip
        create.raise_for_status()
        sec = httpx.get(f"{api}/monitors/{create.json()['id']}/secrets",
                        headers={"authorization": f"Bearer {pat}"})  # fmt: skip
        sec.raise_for_status()
        token = sec.json()["heartbeatToken"]
        ping_url = f"{api}/heartbeats/{token}"
        assert sec.json()["heartbeatUrl"] == ping_url
        wait_until(lambda: httpx.post(ping_url, timeout=10).status_code == 204, 10)
        assert httpx.head(ping_url).status_code == 204
        # The worker's /metrics, on the port after the ingest processes' admin ports.
        procs = default_ingest_procs()
        worker_metrics = f"http://127.0.0.1:{admin + procs}/metrics"
        wait_until(lambda: answers(worker_metrics), 10)
        assert "lastseen_retention_runs_total 1" in httpx.get(worker_metrics).text
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert worker_metrics in output  # the banner says where
    EXPOSURE.text("lastseen serve output", "process outputs", output, allowed=(pat,))
    assert process.returncode == 0, output
    assert output.rstrip().endswith("lastseen stopped."), output[-500:]
    assert pat in output  # printed once, on the first run
    assert output.count(pat) == 1
    assert token not in output  # no heartbeat token in any log line


def test_a_taken_port_stops_serve_at_once_with_one_line_naming_it(database_url, tmp_path: Path):
    """With 8080 taken, serve printed its banner, then the ingest crash-looped forever with
    a 50-line traceback per attempt. A port that is taken will not free itself: serve now
    checks its ports first and stops with one line that names the address and the knob."""
    ingest, admin, control = free_port(), free_port(9), free_port()  # admin: per process, + worker
    env = {**os.environ, "LASTSEEN_DATABASE_URL": database_url,
           "LASTSEEN_CONTROL_LISTEN": f"127.0.0.1:{control}"}  # fmt: skip
    with socket.create_server(("127.0.0.1", ingest)):  # somebody else's server
        done = subprocess.run(
            [sys.executable, "-m", "lastseen", "serve", "--data-dir", str(tmp_path),
             "--listen", f"127.0.0.1:{ingest}", "--admin-listen", f"127.0.0.1:{admin}",
             "--ingest-procs", "2"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""  # no banner, nothing started
    assert done.stderr.strip().splitlines() == [
        f"lastseen: cannot listen on 127.0.0.1:{ingest} for the public listener (--listen,"
        " LASTSEEN_INGEST_LISTEN): Address already in use"
    ]
