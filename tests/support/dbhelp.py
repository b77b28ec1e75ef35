"""Helpers for ingest tests against a real PostgreSQL, callable from trio tests."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import trio

from core import seenlog
from core.pg import free_port
from core.seed import SeededMonitor, seed_monitors
from ingest.clock import Clock
from ingest.config import IngestConfig
from ingest.service import Ingest

from .aio import run
from .exposure import EXPOSURE


def _in_thread(dsn: str, fn: Any) -> Any:
    async def go() -> Any:
        conn = await asyncpg.connect(dsn)
        try:
            return await fn(conn)
        finally:
            await conn.close()

    return run(go())


async def with_conn(dsn: str, fn: Any) -> Any:
    """Run `await fn(conn)` on a fresh asyncpg connection in a worker thread."""
    return await trio.to_thread.run_sync(_in_thread, dsn, fn)


async def fetch(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    return await with_conn(dsn, lambda c: c.fetch(query, *args))


async def execute(dsn: str, query: str, *args: Any) -> str:
    return await with_conn(dsn, lambda c: c.execute(query, *args))


async def seed(dsn: str, n: int, **kwargs: Any) -> list[SeededMonitor]:
    return await with_conn(dsn, lambda c: seed_monitors(c, n, **kwargs))


def config(dsn: str, **overrides: Any) -> IngestConfig:
    values: dict[str, Any] = {
        "database_url": dsn,
        "port": 0,
        "admin_port": 0,
        "flush_interval": 0.1,
        "poll_interval": 0.5,
        "db_timeout": 2.0,
        "shutdown_grace": 1.0,
    }
    values.update(overrides)
    return IngestConfig(**values)


@asynccontextmanager
async def running(dsn: str, clock: Clock | None = None, **overrides: Any) -> AsyncIterator[Ingest]:
    ingest = Ingest(config(dsn, **overrides), clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(ingest.run)
        try:
            yield ingest
        finally:
            ingest.request_stop()


async def http(port: int, data: bytes) -> bytes:
    """Send raw bytes, return everything the server answers until it closes or pauses."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        out = b""
        with trio.move_on_after(2):
            while b"\r\n\r\n" not in out or (b"Content-Length" in out and not out.endswith(b"}")):
                chunk = await stream.receive_some()
                if not chunk:
                    break
                out += chunk
        EXPOSURE.text("raw HTTP answer", "responses", out.decode(errors="replace"))
        return out


async def ping(port: int, token: str, method: str = "POST") -> int:
    request = (
        f"{method} /api/v1/heartbeats/{token} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    answer = await http(port, request.encode())
    return int(answer.split(b" ", 2)[1])


async def metrics(admin: int) -> dict[str, float]:
    """The ingest's /metrics (its admin port) as {name without lastseen_: value}."""
    answer = await http(admin, b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
    return {
        name.decode(): float(value)
        for name, value in re.findall(rb"^lastseen_(\w+) ([0-9.e+-]+)\r?$", answer, re.M)
    }


async def wait_for(predicate: Any, within: float = 5.0, step: float = 0.02) -> float:
    """Poll an async predicate until true; returns the seconds it took."""
    start = trio.current_time()
    with trio.fail_after(within):
        while not await predicate():
            await trio.sleep(step)
    return trio.current_time() - start


def _wait_notify(dsn: str, channel: str, ready: threading.Event, timeout: float) -> bool:
    async def go() -> bool:
        conn = await asyncpg.connect(dsn)
        got = asyncio.Event()
        try:
            await conn.add_listener(channel, lambda *_: got.set())
            ready.set()
            try:
                await asyncio.wait_for(got.wait(), timeout)
            except TimeoutError:
                return False
            return True
        finally:
            await conn.close()

    return run(go())


@asynccontextmanager
async def notifications(dsn: str, channel: str, within: float = 5.0) -> AsyncIterator[list[bool]]:
    """Listen on `channel` while the body runs; the list holds True if a NOTIFY came."""
    ready = threading.Event()
    result: list[bool] = []
    async with trio.open_nursery() as nursery:

        async def listen() -> None:
            result.append(await trio.to_thread.run_sync(_wait_notify, dsn, channel, ready, within))

        nursery.start_soon(listen)
        await trio.to_thread.run_sync(ready.wait, 10)
        yield result


@dataclass
class IngestProcess:
    process: trio.Process
    port: int
    admin: int
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@asynccontextmanager
async def ingest_process(
    dsn: str, token: str, log: Path, **env: str
) -> AsyncIterator[IngestProcess]:
    """A real `lastseen ingest` on 127.0.0.1 (LASTSEEN_* from `env`), serving once `token`
    answers 204; stopped by its PID (SIGTERM, then SIGKILL after 10 s). Its output goes to
    `log` and, afterwards, to the exposure search."""
    port, admin = free_port(), free_port()
    full_env = {**os.environ, "LASTSEEN_DATABASE_URL": dsn, **env}
    with log.open("wb") as out:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "lastseen", "ingest", "--listen", f"127.0.0.1:{port}",
             "--admin-listen", f"127.0.0.1:{admin}"], env=full_env, stdout=out, stderr=out,
        )  # fmt: skip
    handle = IngestProcess(process, port, admin, log)
    try:

        async def serving() -> bool:
            try:
                return await ping(port, token) == 204
            except OSError:
                return False  # not listening yet

        await wait_for(serving, within=30, step=0.1)
        yield handle
    finally:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
        EXPOSURE.text("lastseen ingest output", "process outputs", handle.output())


async def probe(port: int, token: str, seconds: float) -> dict[str, float]:
    """Ping `token` 200 times a second for `seconds` from another process
    (benchmarks/probe.py), so that the load this process generates does not delay the
    measurement itself; its figures: pings, p50_ms, p99_ms, max_ms, max_at, errors."""
    done = await trio.run_process(
        [sys.executable, "-m", "benchmarks.probe", str(port), token, str(seconds)],
        capture_stdout=True,
    )
    result: dict[str, float] = json.loads(done.stdout)
    return result


async def last_seen(dsn: str) -> dict[int, float]:
    """Every monitor's last-seen time as persisted (the later of monitor_state and the
    seen log; 0.0: never)."""
    return await with_conn(dsn, seenlog.persisted)
