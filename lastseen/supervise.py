"""`lastseen serve`: the embedded database, migrations, and the processes, supervised.

Each child runs `python -m lastseen <role>` with LASTSEEN_DATABASE_URL pointing at the
database. A child that exits unexpectedly is logged and restarted (backoff from 1 s to
30 s, reset once it has run for a minute). SIGINT or SIGTERM stops them all with SIGTERM,
waits for them (they stop gracefully within 5 s), kills what is left, then stops the
embedded database.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from core.pg import database

log = logging.getLogger(__name__)

STOP_WAIT_SECONDS = 10.0
HEALTHY_AFTER_SECONDS = 60.0


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff: float = 1.0
    restart_at: float = field(default=0.0)

    def start(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(self.argv, env=env)
        self.started_at = time.monotonic()
        log.info("started %s (pid %d)", self.name, self.process.pid)


def serve(data_dir: Path, *, listen: str | None, admin_listen: str | None) -> int:
    from .cli import run_migrations

    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    listen = listen or os.environ.get("LASTSEEN_LISTEN", "127.0.0.1:8080")
    admin_listen = admin_listen or os.environ.get("LASTSEEN_ADMIN_LISTEN", "127.0.0.1:9108")
    with database(data_dir) as dsn:
        run_migrations(dsn)
        env = {**os.environ, "LASTSEEN_DATABASE_URL": dsn}
        me = [sys.executable, "-m", "lastseen"]
        children = [
            Child("ingest", [*me, "ingest", "--listen", listen, "--admin-listen", admin_listen]),
        ]
        for child in children:
            child.start(env)
        print(
            f"lastseen is running: heartbeats at http://{listen}/api/v1/heartbeats/<token>, "
            f"metrics at http://{admin_listen}/metrics. Ctrl-C stops it.",
            flush=True,
        )
        while True:
            time.sleep(0.2)
            if stopping:
                break
            for child in children:
                _keep_alive(child, env)
        log.info("stopping")
        for child in children:
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        for child in children:
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", child.name)
                child.process.kill()
                child.process.wait()
    return 0


def _keep_alive(child: Child, env: dict[str, str]) -> None:
    process = child.process
    now = time.monotonic()
    if process is not None:
        code = process.poll()
        if code is None:
            if now - child.started_at > HEALTHY_AFTER_SECONDS:
                child.backoff = 1.0
            return
        log.error("%s exited with %s; restarting in %.0f s", child.name, code, child.backoff)
        child.process = None
        child.restart_at = now + child.backoff
        child.backoff = min(child.backoff * 2, 30.0)
    if now >= child.restart_at:
        child.start(env)
