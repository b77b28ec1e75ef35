"""`lastseen backup FILE` and `lastseen restore FILE`: the database and the keyring that
unseals its secrets, in one file, the keyring never in the clear.

A backup is a tar archive (``tar tf`` lists it) of three members:

- ``manifest.json``: the format, when, the schema version, this lastseen's version, and
  how the keyring is sealed (scrypt's parameters and salt, the AES-GCM nonce);
- ``keyring.sealed``: the keyring document, sealed with AES-256-GCM under a key derived
  from the passphrase by scrypt (n = 2^15, r = 8, p = 1);
- ``database.dump``: ``pg_dump --format=custom`` of the whole database.

The passphrase comes from ``LASTSEEN_BACKUP_PASSPHRASE`` or, on a terminal, is asked for;
without one, nothing is written: a backup with the keyring in the clear would hand every
heartbeat token, channel secret and PAT to whoever reads it. The database is
``LASTSEEN_DATABASE_URL``, or the embedded cluster in the data directory (started for the
occasion if ``serve`` is not running it).

Restore goes into an empty database only (a new data directory, or a new database on
``LASTSEEN_DATABASE_URL``), and writes the keyring to ``<data-dir>/keyring.json``: never
over a different keyring, which would make that database's secrets unreadable.
"""

from __future__ import annotations

import base64
import getpass
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from core.migrate import migrations
from core.pg import client_tool, database, password_in_env

FORMAT = 1
SCRYPT = {"n": 2**15, "r": 8, "p": 1}
AAD = b"lastseen backup keyring v1"
MIN_PASSPHRASE = 12
PASSPHRASE_VARIABLE = "LASTSEEN_BACKUP_PASSPHRASE"


class BackupError(Exception):
    """What stops a backup or a restore, said in one line."""


def passphrase(*, confirm: bool) -> str:
    value = os.environ.get(PASSPHRASE_VARIABLE)
    if not value and sys.stdin.isatty():
        value = getpass.getpass("backup passphrase: ")
        if confirm and getpass.getpass("again: ") != value:
            raise BackupError("the two passphrases differ")
    if not value:
        raise BackupError(
            "a backup holds the keyring, which unseals every token and secret: give a "
            f"passphrase in {PASSPHRASE_VARIABLE} (or on a terminal)"
        )
    if len(value) < MIN_PASSPHRASE:
        raise BackupError(f"the passphrase must be at least {MIN_PASSPHRASE} characters")
    return value


def _key(secret: str, salt: bytes, params: dict[str, int]) -> bytes:
    kdf = Scrypt(salt=salt, length=32, n=params["n"], r=params["r"], p=params["p"])
    return kdf.derive(secret.encode())


def seal_keyring(keyring_json: str, secret: str) -> tuple[dict[str, object], bytes]:
    salt, nonce = os.urandom(16), os.urandom(12)
    sealed = AESGCM(_key(secret, salt, SCRYPT)).encrypt(nonce, keyring_json.encode(), AAD)
    how = {
        "kdf": "scrypt", **SCRYPT, "cipher": "AES-256-GCM",
        "salt": base64.b64encode(salt).decode(), "nonce": base64.b64encode(nonce).decode(),
    }  # fmt: skip
    return how, sealed


def open_keyring(how: dict[str, object], sealed: bytes, secret: str) -> str:
    try:
        salt = base64.b64decode(str(how["salt"]))
        nonce = base64.b64decode(str(how["nonce"]))
        params = {k: int(str(how[k])) for k in ("n", "r", "p")}
        plain = AESGCM(_key(secret, salt, params)).decrypt(nonce, sealed, AAD)
    except InvalidTag:
        raise BackupError("the passphrase does not open this backup's keyring") from None
    except (KeyError, ValueError) as exc:
        raise BackupError(f"this backup's manifest is damaged ({exc})") from None
    return plain.decode()


def _run(command: list[str], env: dict[str, str], what: str) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise BackupError(f"{what} failed: {detail[-1] if detail else done.returncode}")


def backup(
    target: Path, data_dir: Path, database_url: str | None, keyring_json: str, version: str
) -> dict[str, object]:
    """Write the backup to `target` (atomically: a temporary file renamed); returns the
    manifest."""
    secret = passphrase(confirm=True)
    how, sealed = seal_keyring(keyring_json, secret)
    with tempfile.TemporaryDirectory(prefix="lastseen-backup-") as tmp:
        dump = Path(tmp) / "database.dump"
        with database(data_dir, database_url) as dsn:
            conninfo, env = password_in_env(dsn)
            dump_command = [client_tool("pg_dump"), "--format=custom", f"--file={dump}",
                            f"--dbname={conninfo}"]  # fmt: skip
            _run(dump_command, env, "pg_dump")
        manifest = {
            "format": FORMAT,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "schema": max(m.version for m in migrations()),
            "lastseen": version,
            "keyring": how,
            "database": "database.dump",
        }
        partial = target.with_name(target.name + ".partial")
        with tarfile.open(partial, "w") as tar:
            _add(tar, "manifest.json", json.dumps(manifest, indent=2).encode())
            _add(tar, "keyring.sealed", sealed)
            tar.add(dump, arcname="database.dump")
        partial.chmod(0o600)
        partial.replace(target)
    return manifest


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o600
    tar.addfile(info, io.BytesIO(data))


def restore(
    source: Path, data_dir: Path, database_url: str | None, keyring_json: str | None
) -> dict[str, object]:
    """Restore `source` into an empty database and the keyring into the data directory;
    returns the manifest."""
    try:
        tar = tarfile.open(source, "r")  # noqa: SIM115 (closed by the with below)
    except (OSError, tarfile.TarError) as exc:
        raise BackupError(f"{source} is not a lastseen backup ({exc})") from None
    with tar, tempfile.TemporaryDirectory(prefix="lastseen-restore-") as tmp:
        manifest = json.loads(_member(tar, "manifest.json"))
        if manifest.get("format") != FORMAT:
            raise BackupError(f"backup format {manifest.get('format')!r} is not one this reads")
        newest = max(m.version for m in migrations())
        if int(manifest["schema"]) > newest:
            raise BackupError(
                f"the backup is of schema {manifest['schema']}, newer than this lastseen's "
                f"({newest}): restore it with the lastseen that made it ({manifest['lastseen']})"
            )
        secret = passphrase(confirm=False)
        restored = open_keyring(manifest["keyring"], _member(tar, "keyring.sealed"), secret)
        path = data_dir / "keyring.json"
        _check_keyring(restored, path, keyring_json)
        dump = Path(tmp) / "database.dump"
        dump.write_bytes(_member(tar, "database.dump"))
        data_dir.mkdir(parents=True, exist_ok=True)
        with database(data_dir, database_url) as dsn:
            conninfo, env = password_in_env(dsn)
            _psql(conninfo, env, _EMPTY_CHECK, "checking the database is empty")
            _psql(conninfo, env, _ROLE, "creating the application role")
            restore_command = [client_tool("pg_restore"), "--exit-on-error", "--no-owner",
                               f"--dbname={conninfo}", str(dump)]  # fmt: skip
            _run(restore_command, env, "pg_restore")
        if not path.exists() and not keyring_json:
            from control.crypto import Keyring, write_keyring

            write_keyring(path, Keyring.from_json(restored))
    return dict(manifest)


def _member(tar: tarfile.TarFile, name: str) -> bytes:
    try:
        member = tar.extractfile(name)
    except KeyError:
        member = None
    if member is None:
        raise BackupError(f"the backup has no {name}")
    return member.read()


def _check_keyring(restored: str, path: Path, keyring_json: str | None) -> None:
    from control.crypto import Keyring

    mine = Keyring.from_json(restored).to_json()
    if keyring_json and Keyring.from_json(keyring_json).to_json() != mine:
        raise BackupError(
            "LASTSEEN_KEYRING is set to another keyring than the backup's: unset it (the "
            f"backup's goes to {path}) or set it to the backup's"
        )
    if path.exists() and Keyring.from_json(path.read_text()).to_json() != mine:
        raise BackupError(
            f"{path} is another keyring than the backup's: move it away first (restoring "
            "over it would make the secrets sealed under it unreadable)"
        )


# An empty database only: restoring over lastseen's tables would mix two histories.
_EMPTY_CHECK = """
DO $$ BEGIN
    IF to_regclass('public.schema_migrations') IS NOT NULL THEN
        RAISE EXCEPTION 'the database already holds lastseen''s tables: restore into an empty one (a new data directory, or a new database)';
    END IF;
END $$;
"""  # noqa: E501
# The role the dump's privileges name (roles are the cluster's, not the database's).
_ROLE = """
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lastseen_app') THEN
        CREATE ROLE lastseen_app NOLOGIN;
    END IF;
END $$;
"""


def _psql(conninfo: str, env: dict[str, str], sql: str, what: str) -> None:
    command = [client_tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", f"--dbname={conninfo}",
               "-c", sql]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if "ERROR" in line] or [
            done.stderr.strip()
        ]
        message = lines[-1].split("ERROR:", 1)[-1].strip()
        raise BackupError(f"{what}: {message}")
