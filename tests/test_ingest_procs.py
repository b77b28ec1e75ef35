"""`lastseen ingest --procs N`: N ingest processes forked from one on one port, admin
listeners on consecutive ports; a dead one forked again at once, all stopped together,
gone with their parent, and all at the parent's address layout (lastseen/children.py
says why a fork)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx

from core.pg import free_port
from core.seed import seed_monitors
from core.tokens import new_token

from .support.aio import run
from .support.serving import serving, stop, wait_until


def _health(admin: int) -> dict[str, object] | None:
    try:
        return httpx.get(f"http://127.0.0.1:{admin}/healthz", timeout=1).json()
    except (httpx.TransportError, ValueError):
        return None


def _pid(admin: int) -> int | None:
    health = _health(admin)
    return None if health is None else int(str(health["pid"]))


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _layout(pid: int) -> dict[str, int]:
    """Where each shared object (libpython, our Cython modules, libc...) is mapped."""
    where: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and ".so" in fields[5]:
            where.setdefault(fields[5], int(fields[0].split("-")[0], 16))
    return where


@contextmanager
def _group(
    dsn: str, tmp_path: Path, *, by_setting: bool = False
) -> Iterator[tuple[subprocess.Popen[bytes], int, list[int]]]:
    """`lastseen ingest --procs 2` (or LASTSEEN_INGEST_PROCS=2), both sharing the shards."""
    port, admin = free_port(), free_port(2)
    env = {**os.environ, "LASTSEEN_DATABASE_URL": dsn}
    procs = ["--procs", "2"]
    if by_setting:
        env["LASTSEEN_INGEST_PROCS"], procs = "2", []
    with (tmp_path / "ingest.log").open("wb") as log:
        group = subprocess.Popen(
            [sys.executable, "-m", "lastseen", "ingest", *procs,
             "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    admins = [admin, admin + 1]
    try:
        wait_until(lambda: all((h := _health(a)) and h["shards"] == 512 for a in admins), 30)
        yield group, port, admins
    finally:
        if group.poll() is None:
            stop(group)


async def _seed_one(dsn: str):
    conn = await asyncpg.connect(dsn)
    try:
        [monitor] = await seed_monitors(conn, 1)
        return monitor
    finally:
        await conn.close()


def test_the_processes_share_one_port_the_shards_and_their_parents_layout(database_url, tmp_path):
    known = run(_seed_one(database_url))
    with _group(database_url, tmp_path) as (group, port, admins):
        pids = [_pid(a) for a in admins]
        assert None not in pids and len(set(pids)) == 2
        assert all(_parent(p) == group.pid for p in pids if p)
        # Every connection (the kernel spreads them over both) answered right.
        for _ in range(20):
            assert httpx.post(f"http://127.0.0.1:{port}/api/v1/heartbeats/{known.token}",
                              headers={"connection": "close"}).status_code == 204  # fmt: skip
            assert httpx.post(f"http://127.0.0.1:{port}/api/v1/heartbeats/{new_token()}",
                              headers={"connection": "close"}).status_code == 404  # fmt: skip
        layouts = [_layout(p) for p in pids if p]
        parent = _layout(group.pid)
        ours = [path for path in parent if "_deadline" in path or "_fastpath" in path]
        assert len(ours) == 2  # imported before the forks
        assert [{k: m[k] for k in parent} for m in layouts] == [parent, parent]
        if Path("/proc/sys/kernel/randomize_va_space").read_text().strip() != "0":
            # A process started on its own has a layout of its own: the forks share one.
            alone = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                                     stdin=subprocess.PIPE)  # fmt: skip
            try:
                wait_until(lambda: any("libpython" in k for k in _layout(alone.pid)), 10)
                mine = _layout(alone.pid)
                libpython = next(k for k in mine if "libpython" in k)
                assert mine[libpython] != parent[libpython]
            finally:
                alone.communicate(b"")


def test_one_killed_is_forked_again_at_once_and_a_stop_stops_them_all(database_url, tmp_path):
    with _group(database_url, tmp_path) as (group, _port, admins):
        victim = _pid(admins[1])
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: (p := _pid(admins[1])) is not None and p != victim, 5)
        replacement = _pid(admins[1])
        assert replacement is not None and _parent(replacement) == group.pid
        wait_until(lambda: (h := _health(admins[1])) is not None and h["shards"] == 512, 15)
        pids = [_pid(a) for a in admins]
        stop(group, signal.SIGTERM)
        assert group.returncode == 0
        assert not any(_alive(p) for p in pids if p)
    log = (tmp_path / "ingest.log").read_text()
    assert "ingest 2 exited with -9; restarting in 0 s" in log
    assert log.count("handed 512 shard(s) over") == 2  # a graceful stop, each


def test_they_stop_when_their_parent_dies(database_url, tmp_path):
    with _group(database_url, tmp_path, by_setting=True) as (group, _port, admins):
        pids = [p for p in (_pid(a) for a in admins) if p]
        group.kill()
        group.wait()
        wait_until(lambda: not any(_alive(p) for p in pids), 15)
    log = (tmp_path / "ingest.log").read_text()
    assert log.count("handed 512 shard(s) over") == 2  # SIGTERM: they stopped gracefully


def test_a_taken_admin_port_stops_it_at_once_with_one_line_naming_it(database_url, tmp_path):
    """A process whose admin port is taken would be forked again forever: the parent
    checks them all first."""
    port, admin = free_port(), free_port(2)
    env = {**os.environ, "LASTSEEN_DATABASE_URL": database_url}
    with socket.create_server(("127.0.0.1", admin + 1)):  # somebody else's server
        done = subprocess.run(
            [sys.executable, "-m", "lastseen", "ingest", "--procs", "2",
             "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"lastseen: cannot listen on 127.0.0.1:{admin + 1} for an admin listener"
        " (--admin-listen, LASTSEEN_ADMIN_LISTEN, + 1): Address already in use"
    )


def test_serve_tells_its_ingest_how_many_even_with_the_setting_in_its_environment(
    database_url, tmp_path
):
    """serve passes its environment on: `--ingest-procs 1` beside LASTSEEN_INGEST_PROCS=2
    must still be one process (owning every shard), not two whose second admin port is
    the worker's."""
    with serving(database_url, tmp_path, ingest_procs=1, LASTSEEN_INGEST_PROCS="2") as served:
        admin = int(served.admin.rsplit(":", 1)[1])
        wait_until(lambda: (h := _health(admin)) is not None and h["shards"] == 1024, 30)
        log = (tmp_path / "serve.log").read_text()
    assert "started ingest 2" not in log
