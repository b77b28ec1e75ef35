"""The `lastseen` command: serve, ingest, control, worker, bootstrap, org, keys, migrate,
psql, backup, restore, run."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.metadata
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from core.logs import configure as configure_logging
from core.migrate import NewerDatabase, migrate_database
from core.pg import EmbeddedPostgresError, database, service_database
from core.settings import Settings, SettingsError, parse_address

from . import run
from .backup import BackupError

log = logging.getLogger("lastseen")


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir) if args.data_dir else args.settings.data_dir


def cmd_config(args: argparse.Namespace) -> int:
    """The configuration this process would run with, secrets masked."""
    settings: Settings = args.settings
    width = max(len(name) for name, _ in settings.effective())
    for name, shown in settings.effective():
        print(f"{name.ljust(width)}  {shown}")
    given = sorted(k for k in os.environ if k.startswith("LASTSEEN_"))
    print(f"\nset in the environment: {', '.join(given) if given else 'none'}")
    return 0


def cmd_psql(args: argparse.Namespace) -> int:
    """psql on LASTSEEN_DATABASE_URL, or on the embedded cluster running in the data
    directory (its port changes on every start); the password goes in psql's
    environment, never on its command line."""
    from core.pg import EmbeddedPostgres, client_tool, password_in_env

    extra = [a for a in args.psql_args if a != "--"]
    if args.settings.database_url:
        url, env = password_in_env(args.settings.database_url)
        return subprocess.call([client_tool("psql"), url, *extra], env=env)
    pg = EmbeddedPostgres(_data_dir(args))
    port = pg.running_port()
    if port is None:
        print(
            f"lastseen: no embedded PostgreSQL is running in {pg.pgdata}: start `lastseen "
            "serve` (or `make run`) first, or set LASTSEEN_DATABASE_URL",
            file=sys.stderr,
        )
        return 2
    command, env = pg.psql_command(port, extra)
    return subprocess.call(command, env=env)


def cmd_backup(args: argparse.Namespace) -> int:
    from control.crypto import load_keyring

    from .backup import backup

    data_dir = _data_dir(args)
    keyring = _existing_keyring(load_keyring, args.settings.keyring, data_dir)
    manifest = backup(
        Path(args.file), data_dir, args.settings.database_url, keyring.to_json(), _version()
    )
    print(f"backed up schema {manifest['schema']} and the keyring (sealed) to {args.file}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from .backup import restore

    data_dir = _data_dir(args)
    manifest = restore(Path(args.file), data_dir, args.settings.database_url, args.settings.keyring)
    print(
        f"restored the backup of {manifest['created']} (schema {manifest['schema']}); the "
        f"keyring is in {data_dir / 'keyring.json'} unless LASTSEEN_KEYRING holds it"
    )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    with database(_data_dir(args), args.settings.database_url) as dsn:
        applied = migrate_database(dsn)
        print(
            f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else "")
        )
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    import trio

    from ingest.config import IngestConfig
    from ingest.service import Ingest

    overrides: dict[str, object] = {}
    if args.listen:
        overrides["host"], overrides["port"] = parse_address(args.listen, "--listen")
    if args.admin_listen:
        overrides["admin_host"], overrides["admin_port"] = parse_address(
            args.admin_listen, "--admin-listen"
        )
    procs = args.procs or args.settings.ingest_procs or 1
    if args.reuse_port or procs > 1:
        overrides["reuse_port"] = True
    with service_database(_data_dir(args), args.settings.database_url, migrate_database) as dsn:
        config = IngestConfig.from_settings(args.settings, database_url=dsn, **overrides)

        def process(config: IngestConfig) -> Callable[[], int]:
            def main() -> int:
                trio.run(lambda: Ingest(config).run(handle_signals=True, own_process=True))
                return 0

            return main

        if procs == 1:
            return process(config)()
        from .children import Child, check_free, run_group

        # Admin listeners on consecutive ports (0: any free one each); everything is
        # imported before the forks. A taken one would not free itself: say so now.
        first = config.admin_port
        what = "an admin listener (--admin-listen, LASTSEEN_ADMIN_LISTEN, + {})"
        host = f"[{config.admin_host}]" if ":" in config.admin_host else config.admin_host
        check_free([(what.format(i), f"{host}:{first + i}")
                    for i in range(procs) if first])  # fmt: skip
        return run_group([
            Child(f"ingest {i + 1}",
                  main=process(dataclasses.replace(config, admin_port=first and first + i)))
            for i in range(procs)
        ])  # fmt: skip


def cmd_control(args: argparse.Namespace) -> int:
    import uvicorn

    from control.app import create_app
    from ingest.config import raise_fd_limit

    settings: Settings = args.settings
    host, port = parse_address(args.listen, "--listen") if args.listen else settings.control_listen
    data_dir = _data_dir(args)
    keyring = _live_keyring(settings, data_dir)
    # SIGHUP: read the keyring again (uvicorn leaves the signal to us).
    signal.signal(signal.SIGHUP, lambda *_: keyring.reload())
    with service_database(data_dir, args.settings.database_url, migrate_database) as dsn:
        # Behind the ingest: trust its X-Forwarded-* (the client's address, for the failure
        # limit and the audit log; the public host, for heartbeat URLs), and any other
        # proxy in LASTSEEN_TRUSTED_PROXIES. As many descriptors as the ingest may forward
        # connections for; idle client connections closed after 5 s; uvicorn's own
        # logging goes through ours (log_config=None).
        raise_fd_limit(65536)
        uvicorn.run(
            create_app(dsn, keyring, settings),
            host=host, port=port, log_level="warning", log_config=None,
            proxy_headers=True, forwarded_allow_ips=settings.trusted_proxies.uvicorn_hosts(),
            timeout_keep_alive=5,
        )  # fmt: skip
    return 0


def _live_keyring(settings: Settings, data_dir: Path) -> Any:
    """The keyring of a long-running process: read again as its file changes (`keys
    rotate`/`retire` need no restart) and on SIGHUP; from LASTSEEN_KEYRING, fixed."""
    from control.crypto import LiveKeyring, load_keyring

    keyring = _existing_keyring(load_keyring, settings.keyring, data_dir)
    return LiveKeyring(keyring, None if settings.keyring else data_dir / "keyring.json")


def _existing_keyring(load: Any, keyring_json: str | None, data_dir: Path) -> Any:
    """The control process and the worker never create a keyring (`serve` and `bootstrap`
    do): started elsewhere than their data directory they made a new one, and every PAT
    and secret failed. A missing one stops them with one line naming where it looked."""
    from control.crypto import KeyringError

    try:
        return load(keyring_json, data_dir, create=False)
    except KeyringError as exc:
        raise SettingsError(str(exc)) from None


def cmd_worker(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from control.delivery import channel_settings
    from control.retention import Periods
    from control.worker import main as worker_main

    settings: Settings = args.settings
    data_dir = _data_dir(args)
    keyring = _live_keyring(settings, data_dir)
    periods = Periods(
        events=timedelta(days=settings.retain_events_days),
        notifications=timedelta(days=settings.retain_notifications_days),
        pings=timedelta(days=settings.retain_pings_days),
        audit=timedelta(days=settings.retain_audit_days),
    )
    with service_database(data_dir, settings.database_url, migrate_database) as dsn:
        admin = (
            parse_address(args.admin_listen, "--admin-listen")
            if args.admin_listen
            else settings.worker_admin_listen or ("127.0.0.1", 9107)
        )
        channels = channel_settings(settings)
        asyncio.run(
            worker_main(dsn, keyring, channels, periods, settings.control_db_timeout, admin)
        )
    return 0


def cmd_org_set_plan(args: argparse.Namespace) -> int:
    from control.models import PLAN_FLOORS

    async def go(dsn: str) -> str:
        conn = await asyncpg.connect(dsn)
        try:
            done: str = await conn.execute(
                "UPDATE orgs SET plan = $2 WHERE name = $1", args.org, args.plan
            )
            return done
        finally:
            await conn.close()

    with database(_data_dir(args), args.settings.database_url) as dsn:
        migrate_database(dsn)
        if asyncio.run(go(dsn)) != "UPDATE 1":
            print(f"lastseen: no organisation named {args.org!r}", file=sys.stderr)
            return 2
    print(f"{args.org}: plan {args.plan} (shortest interval {PLAN_FLOORS[args.plan]} s)")
    return 0


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from control.bootstrap import BootstrapError, bootstrap
    from control.crypto import load_keyring

    data_dir = _data_dir(args)
    keyring = load_keyring(args.settings.keyring, data_dir)
    with database(data_dir, args.settings.database_url) as dsn:
        migrate_database(dsn)
        try:
            token = asyncio.run(bootstrap(dsn, keyring, args.org, args.email, args.role))
        except BootstrapError as exc:
            print(f"lastseen: {exc}", file=sys.stderr)
            return 2
    print(f"created a personal access token for {args.email} ({args.role}) in {args.org}:")
    print(token)
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from control.crypto import load_keyring
    from control.keys import rewrap, rotate_keyring

    data_dir = _data_dir(args)
    if args.settings.keyring:
        print("lastseen: the keyring comes from LASTSEEN_KEYRING: add a key there and make it "
              "current, then run this again to re-wrap", file=sys.stderr)  # fmt: skip
        keyring = load_keyring(args.settings.keyring, data_dir)
    else:
        keyring = rotate_keyring(
            data_dir / "keyring.json", load_keyring(args.settings.keyring, data_dir)
        )

    async def go(dsn: str) -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return await rewrap(conn, keyring)
        finally:
            await conn.close()

    with database(data_dir, args.settings.database_url) as dsn:
        migrate_database(dsn)
        count = asyncio.run(go(dsn))
    print(f"current key {keyring.current!r}; re-wrapped {count} envelope(s)")
    return 0


def cmd_keys_retire(args: argparse.Namespace) -> int:
    from control.crypto import KeyringError, load_keyring
    from control.keys import retire

    data_dir = _data_dir(args)
    if args.settings.keyring:
        raise SettingsError(
            "the keyring comes from LASTSEEN_KEYRING: remove the key there, once `lastseen "
            "keys retire` has said nothing uses it (run it with the keyring in a file)"
        )
    keyring = _existing_keyring(load_keyring, None, data_dir)

    async def go(dsn: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await retire(conn, data_dir / "keyring.json", keyring, args.kid)
        finally:
            await conn.close()

    with database(data_dir, args.settings.database_url) as dsn:
        try:
            asyncio.run(go(dsn))
        except KeyringError as exc:
            raise SettingsError(str(exc)) from None
    print(
        f"retired key {args.kid!r}; running processes drop it within "
        "5 s (dashboard sessions sealed under it end: sign in again)"
    )
    return 0


def _procs(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError("a number of processes from 1 to 64")
    return int(text)


def cmd_serve(args: argparse.Namespace) -> int:
    from .supervise import serve

    return serve(
        _data_dir(args), args.settings, listen=args.listen, admin_listen=args.admin_listen,
        ingest_procs=args.ingest_procs,
    )  # fmt: skip


_EXAMPLES = """\
examples:
  lastseen serve                            everything on 127.0.0.1:8080, data in ./var
  lastseen serve --ingest-procs 2           two ingest processes on the public port
  LASTSEEN_DATABASE_URL=postgresql://... lastseen ingest --procs 4 \\
      --listen 0.0.0.0:8080 --admin-listen 10.0.0.5:9108
                                            one host of a cluster (docs/scaling.md)
  lastseen bootstrap --org acme --email ops@acme.test --role owner
  LASTSEEN_PING_URL=http://127.0.0.1:8080/api/v1/heartbeats/<token> \\
      lastseen run -- backup.sh             a job, its start, exit status and output
  lastseen psql -c 'TABLE blind_periods'    a query on the (embedded) database

Every process reads the LASTSEEN_* variables of the README's configuration table (the
database, listeners, limits, mail); a bad value stops it with one line naming the variable.
"""
_DATA_DIR = "where the embedded database and the keyring live (LASTSEEN_DATA_DIR, ./var)"


def _version() -> str:
    try:
        return importlib.metadata.version("lastseen")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lastseen", description=__doc__, epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"lastseen {_version()}")
    parser.add_argument("--log-level", help="DEBUG, INFO, ... (LASTSEEN_LOG_LEVEL, INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "serve", help="everything on one origin, on an embedded database",
        description="The ingest processes, the control process and the alert worker, "
        "supervised (restarted if they die), on an embedded PostgreSQL in --data-dir or on "
        "LASTSEEN_DATABASE_URL; migrations and the first-run owner too. Reads every "
        "LASTSEEN_* variable. Example: lastseen serve --listen 0.0.0.0:8080",
    )  # fmt: skip
    p.add_argument("--data-dir", help=_DATA_DIR)
    p.add_argument("--listen", default=None, help="public address, default 127.0.0.1:8080")
    p.add_argument("--admin-listen", default=None, help="metrics address, default 127.0.0.1:9108")
    p.add_argument(
        "--ingest-procs", type=_procs, default=None,
        help="ingest processes sharing the public port, each on the next admin port "
        "(LASTSEEN_INGEST_PROCS, default: the number of cores, at most 8)",
    )  # fmt: skip
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "ingest", help="the heartbeat listener alone",
        description="One ingest process; every one on the same LASTSEEN_DATABASE_URL joins "
        "the cluster (docs/scaling.md). Reads LASTSEEN_DATABASE_URL, LASTSEEN_*_LISTEN, the "
        "LASTSEEN_MAX_* limits, LASTSEEN_FLUSH_INTERVAL_SECONDS, LASTSEEN_SEEN_SECONDS, "
        "LASTSEEN_LEASE_SECONDS, LASTSEEN_DB_TIMEOUT_SECONDS, LASTSEEN_TRUSTED_PROXIES, "
        "LASTSEEN_BLIND_*.",
    )  # fmt: skip
    p.add_argument("--data-dir", help=_DATA_DIR)
    p.add_argument("--listen", help="HOST:PORT (LASTSEEN_INGEST_LISTEN), default 127.0.0.1:8080")
    p.add_argument(
        "--admin-listen", help="HOST:PORT (LASTSEEN_ADMIN_LISTEN), default 127.0.0.1:9108"
    )
    p.add_argument(
        "--reuse-port", action="store_true",
        help="share --listen with other ingest processes on this host (SO_REUSEPORT)",
    )  # fmt: skip
    p.add_argument(
        "--procs", type=_procs, default=None,
        help="N ingest processes on --listen, forked from this one, which restarts them;"
        " admin listeners on --admin-listen's port and the next ones (LASTSEEN_INGEST_PROCS,"
        " default 1)",
    )  # fmt: skip
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser(
        "control", help="the control-plane API alone",
        description="The API, the dashboard and the status pages. Reads "
        "LASTSEEN_DATABASE_URL, LASTSEEN_KEYRING, LASTSEEN_CONTROL_LISTEN, LASTSEEN_SMTP_*, "
        "LASTSEEN_PUBLIC_URL, LASTSEEN_TRUSTED_PROXIES and the per-organisation limits.",
    )  # fmt: skip
    p.add_argument("--data-dir", help=_DATA_DIR)
    p.add_argument("--listen", help="HOST:PORT (LASTSEEN_CONTROL_LISTEN), default 127.0.0.1:8081")
    p.set_defaults(func=cmd_control)

    p = sub.add_parser(
        "worker", help="the alert worker alone (several may run)",
        description="Events to incidents, and the notification outbox to the channels. "
        "Reads LASTSEEN_DATABASE_URL, LASTSEEN_KEYRING, LASTSEEN_SMTP_*, "
        "LASTSEEN_ALLOW_PRIVATE_TARGETS, LASTSEEN_TELEGRAM_API, LASTSEEN_RETAIN_*, "
        "LASTSEEN_WORKER_ADMIN_LISTEN.",
    )  # fmt: skip
    p.add_argument("--data-dir", help=_DATA_DIR)
    p.add_argument(
        "--admin-listen",
        help="/metrics and /healthz, HOST:PORT (LASTSEEN_WORKER_ADMIN_LISTEN), "
        "default 127.0.0.1:9107",
    )
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("org", help="organisations")
    org = p.add_subparsers(dest="org_command", required=True)
    p = org.add_parser("set-plan", help="set an organisation's plan (its shortest interval)")
    p.add_argument("org")
    p.add_argument("plan", choices=["free", "pro", "business"])
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_org_set_plan)

    p = sub.add_parser("bootstrap", help="create an organisation and user; print a PAT")
    p.add_argument("--org", required=True)
    p.add_argument("--email", required=True)
    p.add_argument("--role", required=True, choices=["owner", "admin", "member", "viewer"])
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_bootstrap)

    p = sub.add_parser("keys", help="envelope keys")
    keys = p.add_subparsers(dest="keys_command", required=True)
    p = keys.add_parser("rotate", help="add a key, make it current, re-wrap every envelope")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_keys_rotate)
    p = keys.add_parser(
        "retire", help="remove a key from the keyring once no envelope uses it",
        description="Refused for the current key, and while any heartbeat token or channel "
        "secret is still sealed under it (run `lastseen keys rotate` first, which re-wraps "
        "them). Running processes drop the key within 5 s, no restart.",
    )  # fmt: skip
    p.add_argument("kid")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_keys_retire)

    p = sub.add_parser(
        "config", help="print the configuration in effect, secrets masked",
        description="Every setting as the processes started here would use it, from the "
        "LASTSEEN_* variables (a bad value stops with one line naming it), secrets masked.",
    )  # fmt: skip
    p.set_defaults(func=cmd_config)

    p = sub.add_parser(
        "psql", help="psql on the database (the embedded one, wherever its port is)",
        description="psql on LASTSEEN_DATABASE_URL, or as the superuser of the embedded "
        "PostgreSQL that `lastseen serve` runs in --data-dir; arguments after it go to "
        "psql. Example: lastseen psql -c 'SELECT * FROM blind_periods'",
    )  # fmt: skip
    p.add_argument("--data-dir", help=_DATA_DIR)
    p.set_defaults(func=cmd_psql, psql_args=[])

    p = sub.add_parser(
        "backup", help="the database and its keyring (sealed with a passphrase) in one file",
        description="pg_dump of LASTSEEN_DATABASE_URL or of the embedded database, and the "
        "keyring sealed under LASTSEEN_BACKUP_PASSPHRASE (asked for on a terminal; refused "
        "without one), in one tar file (lastseen/backup.py).",
    )  # fmt: skip
    p.add_argument("file")
    p.add_argument("--data-dir", help=_DATA_DIR)
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser(
        "restore", help="a backup into an empty database, its keyring into the data directory",
        description="Restores a `lastseen backup` file into an empty database (a new data "
        "directory, or a new database on LASTSEEN_DATABASE_URL) and its keyring into "
        "<data-dir>/keyring.json, never over a different one.",
    )  # fmt: skip
    p.add_argument("file")
    p.add_argument("--data-dir", help=_DATA_DIR)
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("migrate", help="apply database migrations")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser(
        "run", help="run a command and report its start, exit status and output",
        description=run.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    run.add_arguments(p)

    args, rest = parser.parse_known_args(argv)
    if args.command == "psql":
        args.psql_args = rest  # psql's own options, as given
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "run":
        # Before the settings: nothing of lastseen's own configuration may keep the
        # wrapped command from running.
        return run.main(args, _version())
    try:
        args.settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"lastseen: {exc}", file=sys.stderr)  # one line, no traceback: a fault to fix
        return 2
    configure_logging(args.log_level or args.settings.log_level)
    try:
        return int(args.func(args))
    except (EmbeddedPostgresError, SettingsError, NewerDatabase, BackupError) as exc:
        print(f"lastseen: {exc}", file=sys.stderr)  # a fault that will not fix itself
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
