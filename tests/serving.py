"""`lastseen serve` as a test fixture: a real process on 127.0.0.1 ports, stopped by PID."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from core.pg import free_port

from .exposure import EXPOSURE
from .test_serve import answers, wait_until


@dataclass
class Served:
    origin: str  # http://127.0.0.1:PORT
    pat: str  # the first-run owner's token
    data_dir: Path
    dsn: str

    @property
    def api(self) -> str:
        return f"{self.origin}/api/v1"


@contextmanager
def serving(dsn: str, data_dir: Path, **env: str) -> Iterator[Served]:
    ingest, admin, control = free_port(), free_port(), free_port()
    full_env = {**os.environ, "LASTSEEN_DATABASE_URL": dsn,
                "LASTSEEN_CONTROL_LISTEN": f"127.0.0.1:{control}", **env}  # fmt: skip
    log_path = data_dir / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "lastseen", "serve", "--data-dir", str(data_dir),
             "--listen", f"127.0.0.1:{ingest}", "--admin-listen", f"127.0.0.1:{admin}"],
            env=full_env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    pat = ""
    try:
        origin = f"http://127.0.0.1:{ingest}"
        wait_until(functools.partial(answers, f"{origin}/api/v1/openapi.json"), 30)
        token_file = data_dir / "owner-token"  # absent when the database had organisations
        pat = token_file.read_text().strip() if token_file.exists() else ""
        yield Served(origin, pat, data_dir, dsn)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        output = log_path.read_text(errors="replace")
        EXPOSURE.text("lastseen serve output", "process outputs", output, allowed=(pat,))
