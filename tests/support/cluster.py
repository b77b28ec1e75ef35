"""Several real `lastseen ingest` processes on one database: on one port of one host
(SO_REUSEPORT), or as "hosts" on 127.0.0.2, 127.0.0.3, ... of loopback. Started and
stopped by PID; each logs to its own file."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import trio

from core.pg import free_port

from .serving import stop


@dataclass
class Proc:
    """One ingest process: where it listens, where its admin listener is."""

    host: str
    port: int
    admin_port: int
    log_path: Path
    reuse_port: bool = False
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def admin(self) -> str:
        return f"{self.host}:{self.admin_port}"

    def start(self, dsn: str) -> None:
        argv = [sys.executable, "-m", "lastseen", "ingest",
                "--listen", f"{self.host}:{self.port}", "--admin-listen", self.admin]  # fmt: skip
        if self.reuse_port:
            argv.append("--reuse-port")
        env = {**os.environ, "LASTSEEN_DATABASE_URL": dsn, **self.env}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)

    def send(self, sig: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, sig)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            if sig == signal.SIGKILL:
                self.process.kill()
                self.process.wait()
            else:
                os.kill(self.process.pid, signal.SIGCONT)  # a stopped one must hear it
                stop(self.process, sig)

    def health(self) -> dict[str, object] | None:
        try:
            answer = httpx.get(f"http://{self.admin}/healthz", timeout=1)
        except httpx.TransportError:
            return None
        body: dict[str, object] = json.loads(answer.text)
        body["http_status"] = answer.status_code
        return body

    def metrics(self) -> dict[str, float]:
        text = httpx.get(f"http://{self.admin}/metrics", timeout=2).text
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#") and "{" not in line:
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values

    def shards(self) -> int:
        health = self.health()
        return int(health["shards"]) if health else 0  # type: ignore[call-overload]


async def monitors_owned_by(dsn: str, owner: str) -> set[int]:
    """The ids of the monitors whose shard `owner` (an admin address) holds."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT m.id FROM monitors m JOIN shard_leases l ON l.shard = m.shard"
            " WHERE l.owner = $1",
            owner,
        )
        return {r["id"] for r in rows}
    finally:
        await conn.close()


def wait_for(predicate: Callable[[], bool], within: float, what: str) -> float:
    """Poll until `predicate()`; the seconds it took."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < within, f"timed out: {what}"
        time.sleep(0.05)
    return time.monotonic() - started


def balanced(procs: Sequence[Proc], *, slack: int = 2) -> bool:
    """Every shard owned, each process about its share."""
    shards = [p.shards() for p in procs]
    share = -(-1024 // len(procs))
    return (
        sum(shards) == 1024 and min(shards) >= 1024 // len(procs) - slack and max(shards) <= share
    )


@contextmanager
def ingests(
    dsn: str,
    hosts: Sequence[str],
    tmp_path: Path,
    *,
    one_port: bool = False,
    same_ports: bool = False,
    env: dict[str, str] | None = None,
) -> Iterator[list[Proc]]:
    """One ingest process per entry of `hosts`, started together; with `one_port`, all
    on one shared port (SO_REUSEPORT); with `same_ports`, the same port and admin port
    on each host (as a load balancer's configuration has them); `env` added to each
    one's environment."""
    shared, admin = free_port(), free_port()
    procs = [
        Proc(
            host,
            shared if one_port or same_ports else free_port(),
            admin if same_ports else free_port(),
            tmp_path / f"ingest-{host}-{i}.log",
            reuse_port=one_port,
            env=dict(env or {}),
        )
        for i, host in enumerate(hosts)
    ]
    try:
        for p in procs:
            p.start(dsn)
        wait_for(lambda: all(p.health() is not None for p in procs), 30, "ingests answering")
        yield procs
    finally:
        for p in procs:
            p.stop()


def request(token: str) -> bytes:
    return (
        f"POST /api/v1/heartbeats/{token} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".encode()
    )


async def ping_once(host: str, port: int, token: str) -> int:
    """One ping on a new connection: the status, or 0 if it failed."""
    try:
        stream = await trio.open_tcp_stream(host, port)
    except OSError:
        return 0
    async with stream:
        try:
            await stream.send_all(request(token))
            answer = b""
            while b"\r\n" not in answer:
                chunk = await stream.receive_some(256)
                if not chunk:
                    return 0
                answer += chunk
        except (trio.BrokenResourceError, OSError):
            return 0
    return int(answer.split(b" ", 2)[1])


async def ping_all(
    targets: Sequence[tuple[str, int]],
    tokens: Sequence[str],
    *,
    rate: float,
    concurrency: int = 32,
    on_answer: Callable[[str, int, float], None] | None = None,
) -> Counter[int]:
    """Ping every token once, in order, at about `rate` per second, each on a new
    connection to a random target; the statuses counted."""
    statuses: Counter[int] = Counter()
    rng = random.Random(7)
    send, receive = trio.open_memory_channel[str](concurrency)

    async def worker() -> None:
        async for token in receive:
            host, port = rng.choice(targets)
            status = await ping_once(host, port, token)
            statuses[status] += 1
            if on_answer is not None:
                on_answer(token, status, time.time())

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
        async with send:
            started = trio.current_time()
            for i, token in enumerate(tokens):
                await trio.sleep_until(started + i / rate)
                await send.send(token)
    return statuses
