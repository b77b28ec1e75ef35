"""The embedded PostgreSQL lets no local account in without a password (issue 16, item 8),
and the processes log in without superuser rights."""

from __future__ import annotations

import shutil
from pathlib import Path

import asyncpg
import pytest

from core.migrate import migrate_database
from core.pg import DB_NAME, DB_USER, SERVICE_USER, EmbeddedPostgres

from ..conftest import throwaway_dir
from ..support.aio import run


@pytest.fixture
def pg_dir():
    path = throwaway_dir("lastseen-auth-pg-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def _refused(port: int, user: str, password: str | None) -> str:
    try:
        conn = await asyncpg.connect(
            host="127.0.0.1", port=port, user=user, password=password, database=DB_NAME
        )
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError) as exc:
        return type(exc).__name__
    await conn.close()
    return "let in"


def test_no_password_no_entry_and_the_service_login_is_no_superuser(pg_dir: Path):
    pg = EmbeddedPostgres(pg_dir, durable=False)
    try:
        superuser = pg.start()
        assert "trust" not in (pg.pgdata / "pg_hba.conf").read_text()
        port = pg.port
        assert port is not None
        # Any local account, any user name, without the password: refused.
        assert run(_refused(port, DB_USER, None)) == "InvalidPasswordError"
        assert run(_refused(port, DB_USER, "guess")) == "InvalidPasswordError"
        migrate_database(superuser)
        service = pg.service_dsn()
        assert run(_refused(port, SERVICE_USER, None)) == "InvalidPasswordError"
        for name in ("pg-superuser.password", "pg-service.password"):
            assert (pg_dir / name).stat().st_mode & 0o777 == 0o600

        async def as_service() -> tuple[bool, str, str]:
            conn = await asyncpg.connect(service)
            try:
                is_super = await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = $1",
                                               SERVICE_USER)  # fmt: skip
                role = await conn.fetchval("SELECT current_user")
                try:
                    await conn.execute("UPDATE audit_log SET action = 'x'")
                    tamper = "changed"
                except asyncpg.InsufficientPrivilegeError:
                    tamper = "permission denied"
                return is_super, role, tamper
            finally:
                await conn.close()

        assert run(as_service()) == (False, "lastseen_app", "permission denied")
    finally:
        pg.stop()


def test_a_cluster_that_trusted_local_connections_is_switched_to_passwords(pg_dir: Path):
    pg = EmbeddedPostgres(pg_dir, durable=False)
    pg.start()
    pg.stop()
    # What an older lastseen wrote.
    (pg.pgdata / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
    again = EmbeddedPostgres(pg_dir, durable=False)
    try:
        again.start()
        assert "trust" not in (again.pgdata / "pg_hba.conf").read_text()
        assert again.port is not None
        assert run(_refused(again.port, DB_USER, None)) == "InvalidPasswordError"
        assert run(_refused(again.port, DB_USER, again._password("pg-superuser.password"))) == (
            "let in"
        )
    finally:
        again.stop()
