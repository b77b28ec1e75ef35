"""`lastseen serve`: the embedded database, migrations, and the processes, supervised.

The ingest answers heartbeats on the public address and forwards every other request to
the control process (LASTSEEN_CONTROL_LISTEN, default 127.0.0.1:8081): one origin. The
alert worker turns the ingest's events into incidents and notifications.
On the first run (no organisation yet) it creates 'default' with an owner, prints the
owner's PAT once and writes it to <data-dir>/owner-token (mode 0600).

Each child runs `python -m lastseen <role>` with LASTSEEN_DATABASE_URL pointing at the
database; with several ingest processes, one `lastseen ingest --procs N` forks them
(``children.py``: why). A child that exits unexpectedly is restarted (``children.py``:
at once the first time, then backing off). The embedded PostgreSQL is supervised too: if its
postmaster dies (kill -9, the OOM killer), it is started again on the same port, every
second until it runs; the children reconnect by themselves. SIGINT or SIGTERM stops them
all with SIGTERM, waits for them (they stop gracefully within 5 s), kills what is left,
then stops the embedded database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from control.bootstrap import bootstrap
from control.crypto import Keyring, load_keyring
from core.migrate import migrate_database
from core.pg import EmbeddedPostgres, EmbeddedPostgresError, database
from core.settings import Settings, parse_address

from .children import Child, StopRequest, Wakeup, check_free, supervise

log = logging.getLogger(__name__)


def default_ingest_procs() -> int:
    """One ingest process per core, at most 8."""
    return max(1, min(8, len(os.sched_getaffinity(0))))


def serve(
    data_dir: Path,
    settings: Settings,
    *,
    listen: str | None,
    admin_listen: str | None,
    ingest_procs: int | None = None,
) -> int:
    stop = StopRequest()
    listen = listen or _text(settings.ingest_listen)
    admin_listen = admin_listen or _text(settings.admin_listen)
    control_listen = _text(settings.control_listen)
    procs = ingest_procs or settings.ingest_procs or default_ingest_procs()
    admin_host, admin_port = parse_address(admin_listen, "--admin-listen")
    admins = [f"{admin_host}:{admin_port + i}" for i in range(procs)]
    # The worker's /metrics: the next port, unless LASTSEEN_WORKER_ADMIN_LISTEN says.
    worker_admin = (
        _text(settings.worker_admin_listen)
        if settings.worker_admin_listen
        else f"{admin_host}:{admin_port + procs}"
    )
    # A port that is taken will not free itself: say so now, in one line, rather than
    # print the banner and restart a process that cannot listen, forever.
    check_free([
        ("the public listener (--listen, LASTSEEN_INGEST_LISTEN)", listen),
        *((f"an admin listener (--admin-listen, LASTSEEN_ADMIN_LISTEN, + {i})", a)
          for i, a in enumerate(admins)),
        ("the control process (LASTSEEN_CONTROL_LISTEN)", control_listen),
        ("the worker's admin listener (LASTSEEN_WORKER_ADMIN_LISTEN, or the admin + "
         f"{procs})", worker_admin),
    ])  # fmt: skip
    keyring = load_keyring(settings.keyring, data_dir)
    embedded = None if settings.database_url else EmbeddedPostgres(data_dir)
    with (
        database(data_dir, settings.database_url) if embedded is None else _started(embedded) as dsn
    ):
        migrate_database(dsn)
        keeper = None
        if embedded is not None:
            # The superuser only migrates; the processes log in as the service login.
            dsn = embedded.service_dsn()
            keeper = DatabaseKeeper(embedded)
        owner_token = _first_run(dsn, keyring, data_dir)
        env = {
            **os.environ,
            "LASTSEEN_DATABASE_URL": dsn,
            "LASTSEEN_DATA_DIR": str(data_dir),
            "LASTSEEN_CONTROL_UPSTREAM": control_listen,
            # Links in mails (status pages, unsubscribe) point at the public origin.
            "LASTSEEN_PUBLIC_URL": settings.public_url or f"http://{listen}",
        }
        me = [sys.executable, "-m", "lastseen"]
        # One process forks them all (children.py says why), admin listeners on
        # consecutive ports; --procs even for one, or LASTSEEN_INGEST_PROCS (in the
        # environment it inherits) would count twice.
        group = ["--procs", str(procs)]
        ingest = [*me, "ingest", "--listen", listen, "--admin-listen", admins[0], *group]
        children = [
            Child("ingest", ingest),
            Child("control", [*me, "control", "--listen", control_listen]),
            Child("worker", [*me, "worker", "--admin-listen", worker_admin]),
        ]
        for child in children:
            child.start(env)
        if owner_token:
            print(
                "First run: created the organisation 'default' and its owner. The owner's "
                f"personal access token (also in {data_dir / 'owner-token'}, mode 0600):\n"
                f"{owner_token}",
                flush=True,
            )
        print(
            f"lastseen is running at http://{listen}/api/v1 (heartbeats and the API, "
            f"one origin; {procs} ingest process{'es' if procs > 1 else ''}), metrics at "
            + ", ".join(f"http://{a}/metrics" for a in [*admins, worker_admin])
            + ". Ctrl-C stops it.",
            flush=True,
        )
        wake = Wakeup()  # here: nothing after it sets a wakeup fd of its own (asyncio)
        supervise(children, env, stop, wake, keeper.check if keeper is not None else None)
    print("lastseen stopped.", flush=True)  # after the database too (the with block above)
    return 0


@contextlib.contextmanager
def _started(pg: EmbeddedPostgres) -> Iterator[str]:
    try:
        yield pg.start()
    finally:
        pg.stop()


def _text(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class DatabaseKeeper:
    """Starts the embedded PostgreSQL again when its postmaster has gone."""

    pg: EmbeddedPostgres
    down_since: float | None = None
    next_try: float = 0.0

    def check(self) -> None:
        if self.pg.running_port() is not None:
            if self.down_since is not None:
                log.info("the embedded PostgreSQL is back after %.1f s",
                         time.monotonic() - self.down_since)  # fmt: skip
                self.down_since = None
            return
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
            log.error("the embedded PostgreSQL has stopped; starting it again")
        if now < self.next_try:
            return
        try:
            self.pg.start()
        except (EmbeddedPostgresError, subprocess.SubprocessError, OSError) as exc:
            # Its old backends may still hold the shared memory for a moment: try again.
            log.warning("the embedded PostgreSQL did not start yet (%s)", type(exc).__name__)
            self.next_try = time.monotonic() + 1.0


def _first_run(dsn: str, keyring: Keyring, data_dir: Path) -> str | None:
    """On an empty database: the 'default' organisation, its owner, and an owner PAT."""

    async def empty() -> bool:
        conn = await asyncpg.connect(dsn)
        try:
            return not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM orgs)")
        finally:
            await conn.close()

    if not asyncio.run(empty()):
        return None
    token = asyncio.run(bootstrap(dsn, keyring, "default", "owner@localhost", "owner"))
    path = data_dir / "owner-token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token
