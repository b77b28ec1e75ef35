"""The real `lastseen ingest` process: SIGTERM during pings loses none, and it exits in time."""

from __future__ import annotations

import importlib.metadata
import os
import signal
import subprocess
import sys
import time

import pytest
import trio

from core.pg import free_port

from .support.dbhelp import fetch, ping, seed, wait_for


@pytest.mark.faults
async def test_sigterm_flushes_every_answered_ping_and_exits_within_5_seconds(database_url):
    monitors = await seed(database_url, 50)
    port, admin = free_port(), free_port()
    env = {**os.environ, "LASTSEEN_DATABASE_URL": database_url,
           "LASTSEEN_FLUSH_INTERVAL_SECONDS": "3600"}  # fmt: skip
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "lastseen", "ingest", "--listen", f"127.0.0.1:{port}",
         "--admin-listen", f"127.0.0.1:{admin}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    async def serving() -> bool:
        try:
            return await ping(port, monitors[0].token) == 204
        except OSError:
            return False  # not listening yet

    try:
        await wait_for(serving, within=30)
        acknowledged: dict[int, float] = {}
        for m in monitors:
            before = time.time()
            assert await ping(port, m.token) == 204
            acknowledged[m.id] = before
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        with trio.fail_after(10):
            await process.wait()
        took = time.monotonic() - started
    finally:
        if process.returncode is None:
            process.kill()
    assert process.returncode == 0
    assert took <= 5.0
    rows = await fetch(
        database_url,
        "SELECT monitor_id, extract(epoch FROM last_seen_at)::float8 FROM monitor_state",
    )
    for monitor_id, seen in rows:
        # The flush on stop wrote a receive time no earlier than our send of the last ping.
        assert seen is not None and seen >= acknowledged[monitor_id] - 0.01


def test_the_command_says_its_version_and_each_part_what_it_reads():
    def run_cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "lastseen", *args], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert run_cli("--version").strip() == f"lastseen {importlib.metadata.version('lastseen')}"
    assert "examples:" in run_cli("--help")
    for command, variable in [
        ("serve", "LASTSEEN_DATABASE_URL"), ("ingest", "LASTSEEN_SEEN_SECONDS"),
        ("control", "LASTSEEN_SMTP_"), ("worker", "LASTSEEN_ALLOW_PRIVATE_TARGETS"),
    ]:  # fmt: skip
        assert variable in " ".join(run_cli(command, "--help").split()), command


def test_control_and_worker_refuse_to_make_a_new_keyring(database_url, tmp_path):
    """Started in another directory with LASTSEEN_DATABASE_URL, they made a new keyring and
    every PAT and secret then failed. They now stop at once, naming where they looked."""
    env = {**os.environ, "LASTSEEN_DATABASE_URL": database_url,
           "LASTSEEN_DATA_DIR": str(tmp_path)}  # fmt: skip
    env.pop("LASTSEEN_KEYRING", None)
    for command in (["control", "--listen", "127.0.0.1:9"], ["worker"]):
        done = subprocess.run(
            [sys.executable, "-m", "lastseen", *command], env=env, capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        [line] = done.stderr.strip().splitlines()
        assert line.startswith(f"lastseen: no keyring at {tmp_path.resolve()}/keyring.json")
        assert "LASTSEEN_KEYRING" in line
        assert not (tmp_path / "keyring.json").exists()


def test_psql_reaches_the_database_and_the_embedded_one_wherever_its_port_is(
    database_url, tmp_path
):
    """`lastseen psql` for the runbook's queries: on LASTSEEN_DATABASE_URL (its password
    in the environment of psql, not on its command line), or on the embedded cluster of
    --data-dir, whose port changes on every start; a clear line when that is not running."""
    from core.pg import EmbeddedPostgres

    def psql(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lastseen", "psql", *args], env={**os.environ, **env},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    done = psql(
        {"LASTSEEN_DATABASE_URL": database_url},
        "-tAc",
        "SELECT count(*) > 18 FROM schema_migrations",
    )
    assert (done.returncode, done.stdout.strip()) == (0, "t"), done.stderr

    env = {"LASTSEEN_DATABASE_URL": ""}
    done = psql(env, "--data-dir", str(tmp_path), "-tAc", "SELECT 1")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"lastseen: no embedded PostgreSQL is running in {tmp_path.resolve()}/pg: start"
        " `lastseen serve` (or `make run`) first, or set LASTSEEN_DATABASE_URL"
    )
    pg = EmbeddedPostgres(tmp_path, durable=False)
    pg.start()
    try:
        done = psql(env, "--data-dir", str(tmp_path), "-tAc", "SELECT current_database()")
        assert (done.returncode, done.stdout.strip()) == (0, "lastseen"), done.stderr
    finally:
        pg.stop()
