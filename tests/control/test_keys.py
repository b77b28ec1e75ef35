"""Key rotation re-wraps every envelope, and an interrupted rotation finishes on a rerun."""

from __future__ import annotations

import asyncpg

from control.crypto import TOKEN_PURPOSE, Keyring, envelope_kid, open_envelope, seal
from control.keys import rewrap
from core.seed import ensure_org
from core.tokens import digest, new_token

from ..support.dbhelp import with_conn


async def test_an_interrupted_rotation_finishes_on_a_rerun(database_url):
    old = Keyring.generate()
    tokens: dict[int, str] = {}

    async def create(conn: asyncpg.Connection) -> None:
        org = await ensure_org(conn, "acme")
        for _ in range(7):
            token = new_token()
            monitor_id = await conn.fetchval("SELECT nextval('monitors_id_seq')")
            envelope = seal(
                old, token.encode(), purpose=TOKEN_PURPOSE, org_id=org, object_id=monitor_id
            )
            await conn.execute(
                "INSERT INTO monitors (id, org_id, name, url, interval_sec, token_digest,"
                " token_envelope) VALUES ($1, $2, 'm', 'u', 60, $3, $4)",
                monitor_id, org, digest(token), envelope,
            )  # fmt: skip
            tokens[monitor_id] = token

    await with_conn(database_url, create)
    rotated = old.with_new_key("k2")
    assert await with_conn(database_url, lambda c: rewrap(c, rotated, limit=3)) == 3  # "killed"
    assert await with_conn(database_url, lambda c: rewrap(c, rotated)) == 4  # rerun finishes
    assert await with_conn(database_url, lambda c: rewrap(c, rotated)) == 0

    async def check(conn: asyncpg.Connection) -> None:
        for row in await conn.fetch("SELECT id, org_id, token_envelope FROM monitors"):
            assert envelope_kid(row["token_envelope"]) == "k2"
            opened = open_envelope(
                rotated, row["token_envelope"], purpose=TOKEN_PURPOSE,
                org_id=row["org_id"], object_id=row["id"],
            )  # fmt: skip
            assert opened.decode() == tokens[row["id"]]

    await with_conn(database_url, check)


def test_the_command_adds_a_current_key_and_keeps_the_old(database_url, tmp_path):
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "LASTSEEN_KEYRING"}
    env["LASTSEEN_DATABASE_URL"] = database_url
    run = [sys.executable, "-m", "lastseen", "keys", "rotate", "--data-dir", str(tmp_path)]
    subprocess.run(run, env=env, check=True, capture_output=True, timeout=60)
    doc = json.loads((tmp_path / "keyring.json").read_text())
    assert len(doc["keys"]) == 2 and "default" in doc["keys"]
    assert doc["current"] != "default"
    assert (tmp_path / "keyring.json").stat().st_mode & 0o077 == 0


async def test_a_key_is_retired_only_when_nothing_uses_it(database_url, tmp_path):
    from control.crypto import KeyringError, load_keyring, write_keyring
    from control.keys import retire

    old = Keyring.generate()
    path = tmp_path / "keyring.json"
    rotated = old.with_new_key("k2")
    write_keyring(path, rotated)

    async def scenario(conn: asyncpg.Connection) -> None:
        org = await ensure_org(conn, "acme")
        envelope = seal(old, b"t" * 64, purpose=TOKEN_PURPOSE, org_id=org, object_id=1)
        await conn.execute(
            "INSERT INTO monitors (id, org_id, name, url, interval_sec, token_digest,"
            " token_envelope) VALUES (1, $1, 'm', 'u', 60, $2, $3)",
            org, digest(new_token()), envelope,
        )  # fmt: skip
        for kid, said in [("k2", "is the current key"), ("nope", "no key 'nope'"),
                          ("default", "1 envelope(s) in monitors are still sealed")]:  # fmt: skip
            try:
                await retire(conn, path, rotated, kid)
            except KeyringError as exc:
                assert said in str(exc)
            else:
                raise AssertionError(f"retired {kid}")
        assert await rewrap(conn, rotated) == 1
        retired = await retire(conn, path, rotated, "default")
        assert sorted(retired.keys) == ["k2"] and retired.pat_key == old.pat_key

    await with_conn(database_url, scenario)
    assert sorted(load_keyring(None, tmp_path).keys) == ["k2"]


def test_rotate_and_retire_take_effect_in_a_running_control_process(database_url, tmp_path):
    """No restart: the control process opens envelopes re-wrapped under a key it did not
    have (at once), seals new ones under it, survives the old key's retirement, and
    reads the keyring again on SIGHUP."""
    import os
    import signal
    import subprocess
    import sys

    import httpx

    from core.pg import free_port

    from ..support.aio import fetch
    from ..support.serving import answers, stop, wait_until

    env = {**os.environ, "LASTSEEN_DATABASE_URL": database_url,
           "LASTSEEN_DATA_DIR": str(tmp_path)}  # fmt: skip
    env.pop("LASTSEEN_KEYRING", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lastseen", *args], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    done = cli("bootstrap", "--org", "acme", "--email", "o@acme.test", "--role", "owner")
    assert done.returncode == 0, done.stderr
    pat = done.stdout.strip().splitlines()[-1]
    port = free_port()
    log = (tmp_path / "control.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "lastseen", "control", "--listen", f"127.0.0.1:{port}"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        api = f"http://127.0.0.1:{port}/api/v1"
        wait_until(lambda: answers(f"{api}/openapi.json"), 30)
        c = httpx.Client(base_url=api, headers={"authorization": f"Bearer {pat}"}, timeout=10)

        def create(name: str) -> tuple[int, str]:
            m = c.post("/monitors", json={"name": name, "url": "u", "intervalSec": 60}).json()
            return m["id"], c.get(f"/monitors/{m['id']}/secrets").json()["heartbeatToken"]

        def kid(monitor_id: int) -> str:
            rows = fetch(database_url, "SELECT token_envelope FROM monitors WHERE id = $1",
                         monitor_id)  # fmt: skip
            return envelope_kid(rows[0]["token_envelope"])

        a, token_a = create("a")
        assert cli("keys", "rotate").returncode == 0
        new = kid(a)
        assert new != "default"  # re-wrapped under the new key, in the database
        reveal = c.get(f"/monitors/{a}/secrets")
        assert reveal.status_code == 200 and reveal.json()["heartbeatToken"] == token_a
        b, _ = create("b")
        assert kid(b) == new  # sealed under the new current key
        done = cli("keys", "retire", "default")
        assert done.returncode == 0, done.stderr
        done = cli("keys", "retire", new)
        assert done.returncode == 2 and "is the current key" in done.stderr
        assert c.get(f"/monitors/{a}/secrets").json()["heartbeatToken"] == token_a

        def reloads() -> int:
            return (tmp_path / "control.log").read_bytes().count(b"keyring reloaded")

        before = reloads()
        assert cli("keys", "rotate").returncode == 0
        process.send_signal(signal.SIGHUP)  # at once, not in 5 s
        wait_until(lambda: reloads() > before, 5)
        third, _ = create("c")
        assert kid(third) == kid(a) != new
    finally:
        stop(process, within=10)
        log.close()
