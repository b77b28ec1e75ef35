"""`lastseen serve` as a test fixture: a real process on 127.0.0.1 ports, stopped by PID."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from core.pg import free_port

from .aio import fetch
from .exposure import EXPOSURE


def wait_until(predicate, within: float) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def stop(
    process: subprocess.Popen[bytes] | subprocess.Popen[str],
    sig: int = signal.SIGTERM,
    within: float = 30,
) -> None:
    """Stop a process we started, by its PID: `sig`, then SIGKILL if it is still there
    after `within` seconds."""
    process.send_signal(sig)
    try:
        process.wait(within)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def shards_settled(dsn: str) -> bool:
    """Every shard owned by a live ingest process, their shares even: serve's processes
    share the shards out just after start, and a ping answered before that is judged by
    its new owner from the takeover (the amnesty), not from the ping."""
    owners = fetch(
        dsn,
        "SELECT l.owner, count(*) AS n FROM shard_leases l"
        " JOIN ingest_members m ON m.owner = l.owner AND m.expires_at > now() GROUP BY l.owner",
    )
    live = fetch(dsn, "SELECT count(*) AS n FROM ingest_members WHERE expires_at > now()")
    counts = [r["n"] for r in owners]
    return sum(counts) == 1024 and len(counts) == live[0]["n"] and max(counts) - min(counts) <= 1


@dataclass
class Served:
    origin: str  # http://127.0.0.1:PORT
    pat: str  # the first-run owner's token
    data_dir: Path
    dsn: str
    admin: str = ""  # the (first) ingest's admin listener, 127.0.0.1:PORT

    @property
    def api(self) -> str:
        return f"{self.origin}/api/v1"


@contextmanager
def serving(
    dsn: str, data_dir: Path, *, ingest_procs: int | None = None, settled: bool = False, **env: str
) -> Iterator[Served]:
    """`lastseen serve` on `dsn`; `settled`: wait until its ingest processes have shared
    the shards out (shards_settled) before handing it over."""
    # serve puts its ingest processes' admin listeners on consecutive ports (up to 8).
    ingest, admin, control = free_port(), free_port((ingest_procs or 8) + 1), free_port()
    full_env = {**os.environ, "LASTSEEN_DATABASE_URL": dsn,
                "LASTSEEN_CONTROL_LISTEN": f"127.0.0.1:{control}", **env}  # fmt: skip
    log_path = data_dir / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "lastseen", "serve", "--data-dir", str(data_dir),
             "--listen", f"127.0.0.1:{ingest}", "--admin-listen", f"127.0.0.1:{admin}",
             *(["--ingest-procs", str(ingest_procs)] if ingest_procs else [])],
            env=full_env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    pat = ""
    try:
        origin = f"http://127.0.0.1:{ingest}"
        wait_until(functools.partial(answers, f"{origin}/api/v1/openapi.json"), 30)
        if settled:
            wait_until(functools.partial(shards_settled, dsn), 30)
        token_file = data_dir / "owner-token"  # absent when the database had organisations
        pat = token_file.read_text().strip() if token_file.exists() else ""
        yield Served(origin, pat, data_dir, dsn, f"127.0.0.1:{admin}")
    finally:
        stop(process, signal.SIGINT)
        output = log_path.read_text(errors="replace")
        EXPOSURE.text("lastseen serve output", "process outputs", output, allowed=(pat,))
