"""What the server benchmarks share: a database with seeded monitors, an ingest process,
nginx, wrk, CPU pinning. Every server listens on 127.0.0.1 and is stopped by its PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from core.migrate import migrate_database
from core.pg import EmbeddedPostgres, free_port
from core.seed import seed_monitors

from .report import Result

HERE = Path(__file__).parent
WRK_SCRIPT = HERE / "wrk_pings.lua"


def without_wrk(name: str, title: str) -> Result | None:
    """The skipped result of a server benchmark when wrk is missing, else None."""
    if shutil.which("wrk") is not None:
        return None
    message = "wrk is not installed: apt-get install wrk nginx-light"
    return Result(name, f"{title} (skipped)", [(message,)], {"skipped": message})


def cores() -> tuple[list[str], list[str]]:
    """taskset prefixes for the server and the load generator (empty on one core)."""
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", "0"], ["taskset", "-c", "1"]
    return [], []


@contextlib.contextmanager
def database(pin: list[str] | None = None, *, durable: bool = False) -> Iterator[str]:
    """LASTSEEN_DATABASE_URL, or a throwaway embedded cluster; migrated.

    With `pin` (a taskset prefix), the embedded cluster is moved to the server's core:
    the ingest's database is part of its server and gets no core of its own. `durable`:
    fsync and full-page writes on, as in production (for what PostgreSQL writes).
    """
    url = os.environ.get("LASTSEEN_DATABASE_URL")
    workdir = None
    pg = None
    if not url:
        workdir = Path(tempfile.mkdtemp(prefix="lastseen-bench-"))
        workdir.chmod(0o755)
        pg = EmbeddedPostgres(workdir, durable=durable)
        url = pg.start()
        _CLUSTERS[url] = pg
        if pin:
            # Backends are forked from the postmaster and inherit its affinity.
            for pid in pg.pids():
                subprocess.run([pin[0], "-a", "-p", "-c", pin[-1], str(pid)],
                               check=False, capture_output=True)  # fmt: skip
    try:
        migrate_database(url)
        yield url
    finally:
        if pg is not None:
            _CLUSTERS.pop(url, None)
            pg.stop()
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def database_copy(dsn: str) -> Iterator[str | None]:
    """A copy of `dsn`'s database on the same server (CREATE DATABASE ... TEMPLATE): the
    same monitors and tokens for a second cluster of its own; None where the server
    refuses (a LASTSEEN_DATABASE_URL without CREATEDB). Nothing may be connected to `dsn`
    while it is made."""
    url = urllib.parse.urlsplit(dsn)
    source = url.path.lstrip("/")
    name = f"{source}_copy"
    admin = urllib.parse.urlunsplit(url._replace(path="/postgres"))

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(run(f'CREATE DATABASE "{name}" TEMPLATE "{source}"'))
    except (asyncpg.PostgresError, OSError):
        yield None
        return
    try:
        yield urllib.parse.urlunsplit(url._replace(path=f"/{name}"))
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def seed(dsn: str, n: int, tokens_file: Path) -> list[str]:
    """Create n monitors; write their tokens, one a line, to tokens_file."""

    async def go() -> list[str]:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                "TRUNCATE monitors, monitor_state, monitor_events, monitor_deletions CASCADE"
            )
            seeded = await seed_monitors(conn, n, interval_sec=60, grace_sec=60)
            await conn.execute("ANALYZE monitors")
            return [m.token for m in seeded]
        finally:
            await conn.close()

    tokens = asyncio.run(go())
    tokens_file.write_text("\n".join(tokens) + "\n")
    return tokens


def ping_status(port: int, token: str, timeout: float = 1.0) -> int | None:
    request = f"POST /api/v1/heartbeats/{token} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(request.encode())
            data = s.recv(4096)
        return int(data.split(b" ", 2)[1])
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    started_in: float
    admin: int = 0  # the admin listener's port, for an ingest
    pid: int = 0  # the process serving, if not `process` (one forked by it)

    def wait_ready(self, token: str, started: float, *, within: float, log: str) -> None:
        """Wait until a ping with `token` answers 204; record the time since `started`."""
        deadline = time.monotonic() + within
        while ping_status(self.port, token) != 204:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start; see {log}")
            time.sleep(0.02)
        self.started_in = time.perf_counter() - started

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def ingest(
    dsn: str, probe_token: str, *, pin: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """Start `lastseen ingest` (with `env` added to its environment); ready when
    probe_token answers 204 (bounded at 120 s)."""
    with ingests(dsn, probe_token, [pin], log=log, env=env) as servers:
        yield servers[0]


@contextlib.contextmanager
def ingests(
    dsn: str,
    probe_token: str,
    pins: list[list[str]],
    *,
    log: Path,
    serving: int | None = None,
    env: dict[str, str] | None = None,
    apart: str | None = None,
    forked: bool = False,
) -> Iterator[list[Server]]:
    """One `lastseen ingest` per entry of `pins` (its taskset prefix), all on one port
    (SO_REUSEPORT) when there are several; ready when probe_token answers 204 and every
    shard has its owner (bounded at 120 s). Each Server's `admin` is its admin port.
    `serving`: only the first so many share the port; the others listen on ports of their
    own that no load reaches (they own shards and receive hand-offs, nothing else).
    `apart`: a copy of the database (``database_copy``) for every process after the first,
    each then a cluster of its own on the shared port: no hand-offs, no shards shared.
    `forked`: one `lastseen ingest --procs N` (pinned as `pins[0]`) forks the N processes,
    as `lastseen serve` runs them, instead of N commands started each on its own."""
    port = free_port()
    env = {**os.environ, "LASTSEEN_LOG_LEVEL": "WARNING", **(env or {})}
    shared = ["--reuse-port"] if len(pins) > 1 else []
    started = time.perf_counter()
    servers = []
    with log.open("ab") as log_file:
        if forked:
            admin = free_port(len(pins))
            listen = ["--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}"]
            cmd = [*pins[0], sys.executable, "-m", "lastseen", "ingest", "--procs",
                   str(len(pins)), *listen]  # fmt: skip
            group = subprocess.Popen(cmd, env={**env, "LASTSEEN_DATABASE_URL": dsn},
                                     stdout=log_file, stderr=log_file)  # fmt: skip
            servers = [Server("lastseen ingest", port, group, 0.0, admin + i)
                       for i in range(len(pins))]  # fmt: skip
        for i, pin in enumerate([] if forked else pins):
            admin = free_port()
            own = port if serving is None or i < serving else free_port()
            listen = ["--listen", f"127.0.0.1:{own}", "--admin-listen", f"127.0.0.1:{admin}"]
            cmd = [*pin, sys.executable, "-m", "lastseen", "ingest", *shared, *listen]
            database = apart if apart is not None and i > 0 else dsn
            process = subprocess.Popen(cmd, env={**env, "LASTSEEN_DATABASE_URL": database},
                                       stdout=log_file, stderr=log_file)  # fmt: skip
            servers.append(Server("lastseen ingest", own, process, 0.0, admin))
    try:
        for server in servers[: serving or len(servers)]:
            server.wait_ready(probe_token, started, within=120, log=str(log))
        deadline = time.monotonic() + 30
        clusters = len(servers) if apart is not None else 1
        while sum(shards_owned(s.admin) for s in servers) != 1024 * clusters or (
            len(servers) > 1 and min(shards_owned(s.admin) for s in servers) == 0
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the ingest processes did not share the shards; see {log}")
            time.sleep(0.05)
        if forked:
            for server in servers:
                server.pid = health(server.admin)["pid"]
        yield servers
    finally:
        for server in servers:
            server.stop()


def metrics(admin_port: int) -> dict[str, float]:
    """An ingest's unlabelled metrics by name (empty if it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def cpu_and_switches(pid: int) -> tuple[float, int]:
    """A process's CPU seconds (user + system) and its involuntary context switches so
    far, from /proc (0, 0 where there is none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0, 0
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    switches = next((int(line.split(":")[1]) for line in status.splitlines()
                     if line.startswith("nonvoluntary_ctxt_switches")), 0)  # fmt: skip
    return cpu, switches


_CLUSTERS: dict[str, EmbeddedPostgres] = {}  # database()'s embedded clusters, by URL


def database_cpu(dsn: str) -> float | None:
    """CPU seconds so far of the embedded cluster database() started for `dsn`: its
    postmaster and the processes alive under it (None for a LASTSEEN_DATABASE_URL)."""
    pg = _CLUSTERS.get(dsn)
    return None if pg is None else sum(cpu_and_switches(pid)[0] for pid in pg.pids())


def health(admin_port: int) -> dict[str, Any]:
    """The /healthz of the ingest with this admin port (empty if it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/healthz", timeout=1) as r:
            answer: dict[str, Any] = json.loads(r.read())
            return answer
    except (OSError, ValueError):
        return {}


def shards_owned(admin_port: int) -> int:
    """How many shards the ingest with this admin port holds (0 if it does not answer)."""
    return int(health(admin_port).get("shards", 0))


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 10240; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000;
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{ return 204; }}
    }}
}}
"""


@contextlib.contextmanager
def nginx(pin: list[str]) -> Iterator[Server | None]:
    """nginx answering `return 204` on one worker, if nginx is installed."""
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if binary is None:
        yield None
        return
    workdir = Path(tempfile.mkdtemp(prefix="lastseen-nginx-"))
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=workdir, port=port))
    started = time.perf_counter()
    process = subprocess.Popen(
        [*pin, binary, "-p", str(workdir), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = Server("nginx return 204", port, process, 0.0)
    try:
        server.wait_ready("0" * 64, started, within=10, log=f"{workdir}/error.log")
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class Load:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int  # connection errors, timeouts and answers other than 2xx
    requests: int
    non_2xx: int = 0


def wrk(
    port: int,
    tokens_file: Path,
    *,
    seconds: float,
    connections: int,
    close: bool,
    pin: list[str],
    suffix: str = "",
    rate: float | None = None,
) -> Load:
    """One bounded wrk run rotating through the tokens (`suffix` after each: a check-in
    such as "/start"); at most about `rate` requests a second if given (each connection
    pausing connections / rate between its requests); raises if wrk is missing."""
    if shutil.which("wrk") is None:
        raise FileNotFoundError("wrk is not installed: apt-get install wrk nginx-light")
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        env = {**os.environ, "WRK_TOKENS": str(tokens_file), "WRK_OUT": out.name}
        env["WRK_CLOSE"] = "1" if close else "0"
        env["WRK_SUFFIX"] = suffix
        # wrk's delay is whole milliseconds: at least 1 (0 would be no pacing at all).
        env["WRK_DELAY_MS"] = str(max(1, round(connections * 1000 / rate))) if rate else "0"
        duration = max(1, round(seconds))
        subprocess.run(
            [*pin, "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "5s",
             "-s", str(WRK_SCRIPT), f"http://127.0.0.1:{port}/"],
            env=env, check=True, stdout=subprocess.DEVNULL, timeout=duration + 60,
        )  # fmt: skip
        figures = json.loads(Path(out.name).read_text())
    errors = sum(figures[k] for k in figures if k.startswith("errors_"))
    seconds_run = figures["duration_us"] / 1e6
    return Load(
        requests_per_s=figures["requests"] / seconds_run,
        p50_ms=figures["p50_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        errors=errors,
        requests=figures["requests"],
        non_2xx=figures["errors_status"],
    )
