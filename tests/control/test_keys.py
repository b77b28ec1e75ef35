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
