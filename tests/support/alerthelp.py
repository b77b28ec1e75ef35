"""Helpers for the alert worker's tests: an injected clock, rows set up as the API and the
ingest would write them, and a worker on a real database and real receivers."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from control.crypto import Keyring
from control.delivery import seal_secret
from control.worker import Worker
from notifier.base import Settings, Transport

from .aio import run as run

T0 = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
KEYRING = Keyring.generate()


@dataclass
class FakeClock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def to(self, when: datetime) -> None:
        self.now = max(self.now, when)


@asynccontextmanager
async def worker(
    dsn: str, clock: Any = None, keyring: Keyring = KEYRING, **settings: Any
) -> AsyncIterator[Worker]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=8)
    try:
        async with Transport(Settings(allow_private=True, **settings)) as transport:
            yield Worker(pool, keyring, transport, clock=clock or FakeClock())
    finally:
        await pool.close()


async def org(conn: asyncpg.Connection, name: str = "acme") -> int:
    org_id: int = await conn.fetchval("INSERT INTO orgs (name) VALUES ($1) RETURNING id", name)
    return org_id


async def monitor(
    conn: asyncpg.Connection, org_id: int, name: str = "nightly", alert_email: str | None = None
) -> int:
    monitor_id: int = await conn.fetchval(
        "INSERT INTO monitors (org_id, name, url, interval_sec, grace_sec, alert_email,"
        " token_digest, token_envelope) VALUES ($1, $2, 'internal://x', 30, 0, $3, $4, '{}')"
        " RETURNING id",
        org_id, name, alert_email, secrets.token_bytes(32),
    )  # fmt: skip
    return monitor_id


async def channel(
    conn: asyncpg.Connection,
    org_id: int,
    kind: str,
    public: dict[str, Any],
    secret: dict[str, Any],
    *monitor_ids: int,
) -> int:
    channel_id: int = await conn.fetchval("SELECT nextval('channels_id_seq')")
    envelope = seal_secret(KEYRING, secret, org_id, channel_id) if secret else None
    await conn.execute(
        "INSERT INTO channels (id, org_id, type, name, config, secret_envelope)"
        " VALUES ($1, $2, $3, $4, $5::jsonb, $6)",
        channel_id, org_id, kind, f"{kind} {channel_id}", json.dumps(public), envelope,
    )  # fmt: skip
    for monitor_id in monitor_ids:
        await conn.execute(
            "INSERT INTO monitor_channels (monitor_id, channel_id) VALUES ($1, $2)",
            monitor_id, channel_id,
        )  # fmt: skip
    return channel_id


async def event(
    conn: asyncpg.Connection,
    monitor_id: int,
    kind: str,
    at: datetime,
    last_seen: datetime | None = None,
) -> None:
    """What the ingest's flush writes (with the monitor's last ping then)."""
    await conn.execute(
        "INSERT INTO monitor_events (monitor_id, kind, occurred_at, last_seen_at)"
        " VALUES ($1, $2, $3, $4)",
        monitor_id, kind, at, last_seen,
    )  # fmt: skip


async def notifications(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch("SELECT * FROM notifications ORDER BY id")
    return rows
