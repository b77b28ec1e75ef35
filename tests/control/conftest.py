"""A real `lastseen control` process on 127.0.0.1, on its own database, per module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest

from control import pat
from control.crypto import Keyring
from core.pg import free_port

from ..conftest import fresh_database
from ..support.aio import run
from ..support.exposure import EXPOSURE
from ..support.receivers import Mailbox, smtp_server
from ..support.serving import stop


@dataclass
class Control:
    base: str  # e.g. http://127.0.0.1:PORT/api/v1
    dsn: str
    env: dict[str, str]
    log: Any = None  # the process's output so far: output()

    def output(self) -> str:
        self.log.seek(0)
        text: str = self.log.read().decode(errors="replace")
        return text

    def bootstrap(self, org: str, email: str, role: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "lastseen", "bootstrap", "--org", org, "--email", email,
             "--role", role],
            env=self.env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return out.stdout.strip().splitlines()[-1]

    def sql(self, query: str, *args: object) -> str:
        """Run one statement on the module's database (to set up what the API cannot)."""

        async def go() -> str:
            conn = await asyncpg.connect(self.dsn)
            try:
                return await conn.execute(query, *args)
            finally:
                await conn.close()

        return run(go())

    def token(self, org: str, email: str, role: str, scopes: list[str]) -> str:
        """A PAT with exactly `scopes` for a user of `role` (created if new), written
        straight to the database: minting through the API is bounded by the minter."""
        token = pat.new_token()
        key = Keyring.from_json(self.env["LASTSEEN_KEYRING"]).pat_key
        self.sql(
            "WITH o AS (SELECT id FROM orgs WHERE name = $1),"
            " u AS (INSERT INTO users (org_id, email, role) SELECT id, $2, $3 FROM o"
            "       ON CONFLICT (org_id, email) DO UPDATE SET role = EXCLUDED.role RETURNING id)"
            " INSERT INTO access_tokens (org_id, user_id, name, scopes, token_hash, token_hint)"
            " SELECT o.id, u.id, 'matrix', $4, $5, $6 FROM o, u",
            org, email, role, scopes, pat.token_hash(key, token), pat.hint(token),
        )  # fmt: skip
        return token

    def expire_token(self, token_id: int) -> None:
        self.sql(
            "UPDATE access_tokens SET expires_at = now() - interval '1 second' WHERE id = $1",
            token_id,
        )

    def client(self, token: str | None) -> httpx.Client:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=10)


@pytest.fixture(scope="module")
def control_env() -> dict[str, str]:
    """Extra environment for the module's control process."""
    return {}


@pytest.fixture(scope="module")
def control(postgres_url: str, control_env: dict[str, str]) -> Iterator[Control]:
    for dsn in fresh_database(postgres_url):
        port = free_port()
        env = {
            **os.environ,
            "LASTSEEN_DATABASE_URL": dsn,
            "LASTSEEN_KEYRING": Keyring.generate().to_json(),
            **control_env,
        }
        log = tempfile.TemporaryFile()  # noqa: SIM115 (closed after the process, below)
        process = subprocess.Popen(
            [sys.executable, "-m", "lastseen", "control", "--listen", f"127.0.0.1:{port}"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/api/v1/openapi.json", timeout=1)
                    break
                except httpx.TransportError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("lastseen control did not start") from None
                    time.sleep(0.1)
            yield Control(f"http://127.0.0.1:{port}/api/v1", dsn, env, log)
        finally:
            stop(process, within=10)
            log.seek(0)
            output = log.read().decode(errors="replace")
            log.close()
            EXPOSURE.text("lastseen control output", "process outputs", output)


@pytest.fixture(scope="module")
def mailbox() -> Iterator[Mailbox]:
    """A real SMTP server on 127.0.0.1 for the module (set LASTSEEN_SMTP_URL to its url)."""
    with smtp_server() as box:
        yield box


def public(control: Control) -> httpx.Client:
    """A client of the control process's public pages (no token)."""
    return httpx.Client(base_url=control.base.removesuffix("/api/v1"), timeout=10)


def body(response: httpx.Response) -> dict:
    return json.loads(response.content)
