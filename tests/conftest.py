"""A real PostgreSQL for the suite: LASTSEEN_DATABASE_URL, or a throwaway embedded cluster.

Migrations run once into a template database; every test that asks for `database_url`
gets a fresh copy of it, dropped afterwards.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from core.migrate import migrate_database
from core.pg import EmbeddedPostgres

from .support import exposure
from .support.aio import run

# One template per session: `make test` runs two sessions at once (tests/parallel.py),
# possibly on one LASTSEEN_DATABASE_URL.
TEMPLATE = f"lastseen_test_template_{os.getpid()}"
_counter = itertools.count()


def _with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def _on_server(url: str, *statements: str) -> None:
    """Run `statements` in order on the server of `url` (its maintenance database)."""

    async def go() -> None:
        conn = await asyncpg.connect(_with_db(url, "postgres"))
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    run(go())


def throwaway_dir(prefix: str) -> Path:
    """A temporary directory the embedded PostgreSQL's system user can reach."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    external = os.environ.get("LASTSEEN_DATABASE_URL")
    pg = None
    workdir = None
    if external:
        url = external
    else:
        workdir = throwaway_dir("lastseen-test-pg-")
        pg = EmbeddedPostgres(workdir, durable=False)
        url = pg.start()

    drop_template = f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)"
    _on_server(url, drop_template, f"CREATE DATABASE {TEMPLATE}")
    migrate_database(_with_db(url, TEMPLATE))
    try:
        yield url
    finally:
        if external:
            _on_server(url, drop_template)
        if pg is not None:
            pg.stop(force=True)
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def database_url(postgres_url: str) -> Iterator[str]:
    yield from fresh_database(postgres_url)


def fresh_database(postgres_url: str) -> Iterator[str]:
    """A new database cloned from the migrated template, dropped afterwards."""
    name = f"lastseen_test_{os.getpid()}_{next(_counter)}"

    _on_server(postgres_url, f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    try:
        yield _with_db(postgres_url, name)
    finally:
        _on_server(postgres_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# -- data exposure over the whole suite (tests/support/exposure.py) ---------------------------------


def pytest_configure(config: pytest.Config) -> None:
    exposure.install()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`slow` tests (minutes of real time) run with LASTSEEN_SLOW=1 only (make test-faults)."""
    if os.environ.get("LASTSEEN_SLOW"):
        return
    skip = pytest.mark.skip(reason="long-running: LASTSEEN_SLOW=1 (make test-faults)")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)


def pytest_collection_finish(session: pytest.Session) -> None:
    exposure.rebind()  # test modules imported `from x import f` before the wrappers existed


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaks, _ = exposure.report()
    if leaks and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter) -> None:
    leaks, summary = exposure.report()
    terminalreporter.write_line(summary, red=bool(leaks), green=not leaks)
    for leak in leaks[:50]:
        terminalreporter.write_line(f"  LEAK: {leak}", red=True)


@pytest.fixture
def own_postgres() -> Iterator[EmbeddedPostgres]:
    """An embedded PostgreSQL of the test's own, which it may stop and start."""
    if os.environ.get("LASTSEEN_DATABASE_URL"):
        pytest.skip("needs an embedded cluster it may stop")
    workdir = throwaway_dir("lastseen-outage-")
    pg = EmbeddedPostgres(workdir, durable=False)
    pg.start()
    try:
        yield pg
    finally:
        # force: the test may have restarted it from a worker thread, or stopped it
        pg.stop(force=True)
        shutil.rmtree(workdir, ignore_errors=True)
