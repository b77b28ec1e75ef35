"""`lastseen keys rotate`: a new current key, and every envelope re-wrapped under it.

The keyring is written first (the new key current, the old ones kept), then envelopes are
re-wrapped in batches, each row by a conditional UPDATE on its old envelope. Rows already
under the current key are skipped, so a rotation that was interrupted is finished by
running it again; until then every envelope still opens, under its own key.
"""

from __future__ import annotations

import time
from pathlib import Path

import asyncpg

from .crypto import (
    CHANNEL_PURPOSE,
    TOKEN_PURPOSE,
    Keyring,
    KeyringError,
    envelope_kid,
    open_envelope,
    seal,
    write_keyring,
)

BATCH = 500


def rotate_keyring(path: Path, keyring: Keyring, kid: str | None = None) -> Keyring:
    rotated = keyring.with_new_key(kid or time.strftime("k%Y%m%d%H%M%S"))
    write_keyring(path, rotated)
    return rotated


# Every envelope column: (table, column, purpose of its associated data).
ENVELOPES = (
    ("monitors", "token_envelope", TOKEN_PURPOSE),
    ("channels", "secret_envelope", CHANNEL_PURPOSE),
)


async def rewrap(conn: asyncpg.Connection, keyring: Keyring, *, limit: int | None = None) -> int:
    """Re-seal envelopes not under the current key; returns how many (at most `limit`)."""
    done = 0
    for table, column, purpose in ENVELOPES:
        after = 0
        while limit is None or done < limit:
            rows = await conn.fetch(
                f"SELECT id, org_id, {column} AS envelope FROM {table}"
                f" WHERE id > $1 AND {column} IS NOT NULL ORDER BY id LIMIT $2",
                after,
                BATCH,
            )
            if not rows:
                break
            after = rows[-1]["id"]
            async with conn.transaction():
                for row in rows:
                    if limit is not None and done >= limit:
                        break
                    kid = envelope_kid(row["envelope"])
                    if kid == keyring.current:
                        continue
                    if kid not in keyring.keys:
                        raise KeyringError(f"{table} {row['id']}: its key is not in the keyring")
                    ids = {"purpose": purpose, "org_id": row["org_id"], "object_id": row["id"]}
                    plain = open_envelope(keyring, row["envelope"], **ids)
                    changed = await conn.execute(
                        f"UPDATE {table} SET {column} = $1 WHERE id = $2 AND {column} = $3",
                        seal(keyring, plain, **ids),
                        row["id"],
                        row["envelope"],
                    )
                    done += changed == "UPDATE 1"
    return done


async def retire(conn: asyncpg.Connection, path: Path, keyring: Keyring, kid: str) -> Keyring:
    """Remove `kid` from the keyring file, once nothing sealed under it remains; returns
    the keyring written. Refused (KeyringError, saying why) for the current key, an
    unknown one, or one still in use."""
    if kid not in keyring.keys:
        raise KeyringError(
            f"no key {kid!r} in the keyring (keys: {', '.join(sorted(keyring.keys))})"
        )
    if kid == keyring.current:
        raise KeyringError(
            f"{kid!r} is the current key: `lastseen keys rotate` first (a new current key, "
            "every envelope re-wrapped), then retire it"
        )
    for table, column, _purpose in ENVELOPES:
        n = await conn.fetchval(
            f"SELECT count(*) FROM {table} WHERE {column} IS NOT NULL"
            f" AND {column}::jsonb ->> 'kid' = $1",
            kid,
        )
        if n:
            raise KeyringError(
                f"{n} envelope(s) in {table} are still sealed under {kid!r}: run `lastseen keys "
                "rotate` (it re-wraps them), then retire it"
            )
    kept = {k: v for k, v in keyring.keys.items() if k != kid}
    retired = Keyring(keyring.current, kept, keyring.pat_key)
    write_keyring(path, retired)
    return retired
