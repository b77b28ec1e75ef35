"""Backup and restore (lastseen/backup.py) on the embedded PostgreSQL of `lastseen serve`:
back up, wipe the data directory, restore, serve again, and every PAT, heartbeat token
and channel secret still works; the backup never holds the keyring in the clear, and
is refused without a passphrase, opened with the right one only, restored into an empty
database only and never over another keyring."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from control.crypto import Keyring
from core.pg import free_port

from .support.exposure import EXPOSURE
from .support.receivers import http_receiver
from .support.serving import answers, stop, wait_until

PASSPHRASE = "correct horse battery staple"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "LASTSEEN_DATABASE_URL"}
    env.pop("LASTSEEN_KEYRING", None)
    return {**env, "LASTSEEN_ALLOW_PRIVATE_TARGETS": "1", **extra}


@contextmanager
def _serve(data: Path) -> Iterator[str]:
    """`lastseen serve` on its embedded PostgreSQL in `data`; yields the API's origin."""
    ingest, admin, control = free_port(), free_port(9), free_port()
    log_path = data.parent / f"serve-{ingest}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "lastseen", "serve", "--data-dir", str(data),
             "--listen", f"127.0.0.1:{ingest}", "--admin-listen", f"127.0.0.1:{admin}",
             "--ingest-procs", "1"],
            env=_env(LASTSEEN_CONTROL_LISTEN=f"127.0.0.1:{control}"),
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        origin = f"http://127.0.0.1:{ingest}"
        wait_until(lambda: answers(f"{origin}/api/v1/openapi.json"), 90)
        yield origin
    finally:
        stop(process, signal.SIGINT, within=60)
        # The first run prints its owner's PAT, as it should: to that terminal only.
        token = data / "owner-token"
        pat = token.read_text().strip() if token.exists() else ""
        EXPOSURE.text(
            "lastseen serve output", "process outputs", log_path.read_text(), allowed=(pat,)
        )


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lastseen", *args], env=_env(**env),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_back_up_wipe_restore_and_every_secret_still_works(tmp_path: Path):
    data, file = tmp_path / "data", tmp_path / "lastseen.backup"
    with http_receiver() as receiver:
        with _serve(data) as origin:
            pat = (data / "owner-token").read_text().strip()
            c = httpx.Client(
                base_url=f"{origin}/api/v1", headers={"authorization": f"Bearer {pat}"}
            )
            hook = c.post("/channels", json={
                "type": "webhook", "name": "hook", "config": {"url": f"{receiver.url}/hook"},
            }).json()  # fmt: skip
            monitor = c.post("/monitors", json={
                "name": "nightly", "url": "u", "intervalSec": 60, "channelIds": [hook["id"]],
            }).json()  # fmt: skip
            token = c.get(f"/monitors/{monitor['id']}/secrets").json()["heartbeatToken"]
            assert httpx.post(f"{origin}/api/v1/heartbeats/{token}").status_code == 204
            keyring = (data / "keyring.json").read_text()

            refused = _cli("backup", str(file), "--data-dir", str(data))
            assert refused.returncode == 2 and not file.exists()
            assert refused.stderr.strip() == (
                "lastseen: a backup holds the keyring, which unseals every token and secret:"
                " give a passphrase in LASTSEEN_BACKUP_PASSPHRASE (or on a terminal)"
            )
            done = _cli("backup", str(file), "--data-dir", str(data),
                        LASTSEEN_BACKUP_PASSPHRASE=PASSPHRASE)  # fmt: skip
            assert done.returncode == 0, done.stderr
        # The keyring is nowhere in the clear: not its document, not one of its keys.
        raw = file.read_bytes()
        doc, ring = json.loads(keyring), Keyring.from_json(keyring)
        assert keyring.encode() not in raw
        for text in [doc["pat_key"], *doc["keys"].values()]:
            assert text.encode() not in raw
        for key in [ring.pat_key, *ring.keys.values()]:
            assert key not in raw
        with tarfile.open(file) as tar:
            assert sorted(tar.getnames()) == ["database.dump", "keyring.sealed", "manifest.json"]

        shutil.rmtree(data)  # the disk is gone
        wrong = _cli("restore", str(file), "--data-dir", str(data),
                     LASTSEEN_BACKUP_PASSPHRASE="not the passphrase at all")  # fmt: skip
        assert wrong.returncode == 2
        assert "the passphrase does not open this backup's keyring" in wrong.stderr
        done = _cli("restore", str(file), "--data-dir", str(data),
                    LASTSEEN_BACKUP_PASSPHRASE=PASSPHRASE)  # fmt: skip
        assert done.returncode == 0, done.stderr
        again = _cli("restore", str(file), "--data-dir", str(data),
                     LASTSEEN_BACKUP_PASSPHRASE=PASSPHRASE)  # fmt: skip
        assert again.returncode == 2 and "already holds lastseen's tables" in again.stderr

        with _serve(data) as origin:
            c = httpx.Client(
                base_url=f"{origin}/api/v1", headers={"authorization": f"Bearer {pat}"}
            )
            assert c.get(f"/monitors/{monitor['id']}").json()["name"] == "nightly"  # the PAT
            assert c.get(f"/monitors/{monitor['id']}/secrets").json()["heartbeatToken"] == token
            assert httpx.post(f"{origin}/api/v1/heartbeats/{token}").status_code == 204
            # The channel's secret (its URL) opens: a test alert reaches the receiver.
            result = c.post(f"/monitors/{monitor['id']}/test-alert").json()
            assert [r["ok"] for r in result["results"]] == [True], result
            assert len(receiver.on("/hook")) == 1


def test_restore_never_writes_over_another_keyring(tmp_path: Path):
    data, file = tmp_path / "data", tmp_path / "b"
    done = _cli("migrate", "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    assert _cli("bootstrap", "--org", "a", "--email", "o@a.test", "--role", "owner",
                "--data-dir", str(data)).returncode == 0  # fmt: skip
    done = _cli("backup", str(file), "--data-dir", str(data),
                LASTSEEN_BACKUP_PASSPHRASE=PASSPHRASE)  # fmt: skip
    assert done.returncode == 0, done.stderr
    other = tmp_path / "other"
    other.mkdir()
    (other / "keyring.json").write_text(Keyring.generate().to_json())
    done = _cli("restore", str(file), "--data-dir", str(other),
                LASTSEEN_BACKUP_PASSPHRASE=PASSPHRASE)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"lastseen: {other / 'keyring.json'} is another keyring than the backup's: move it"
        " away first (restoring over it would make the secrets sealed under it unreadable)"
    )
