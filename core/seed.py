"""Create heartbeat monitors straight in the database, in bulk.

For benchmarks and tests, and for operators sizing a deployment: the control plane is the
way to create real monitors. Tokens are returned to the caller only; the database gets
their digests and a placeholder envelope (``{"v":0,"kid":"seed"}``) that no key opens.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from .tokens import digest, new_token

SEED_ENVELOPE = '{"v":0,"kid":"seed"}'


@dataclass(frozen=True)
class SeededMonitor:
    id: int
    token: str


async def ensure_org(conn: asyncpg.Connection, name: str = "seed") -> int:
    org_id: int = await conn.fetchval(
        "INSERT INTO orgs (name) VALUES ($1) ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name"
        " RETURNING id",
        name,
    )
    return org_id


async def seed_monitors(
    conn: asyncpg.Connection,
    count: int,
    *,
    interval_sec: int = 60,
    grace_sec: int = 0,
    alert_threshold: int = 1,
    org: str = "seed",
) -> list[SeededMonitor]:
    """Insert `count` monitors with fresh tokens (COPY, so a million takes seconds)."""
    org_id = await ensure_org(conn, org)
    tokens = [new_token() for _ in range(count)]
    ids: list[int] = [
        r[0]
        for r in await conn.fetch(
            "SELECT nextval('monitors_id_seq') FROM generate_series(1, $1)", count
        )
    ]
    await conn.copy_records_to_table(
        "monitors",
        columns=[
            "id", "org_id", "name", "url", "interval_sec", "grace_sec", "alert_threshold",
            "token_digest", "token_envelope",
        ],
        records=(
            (i, org_id, f"seed {i}", f"internal://seed-{i}", interval_sec, grace_sec,
             alert_threshold, digest(t), SEED_ENVELOPE)
            for i, t in zip(ids, tokens, strict=True)
        ),
    )  # fmt: skip
    return [SeededMonitor(i, t) for i, t in zip(ids, tokens, strict=True)]
