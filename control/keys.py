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

from .api_monitors import TOKEN_PURPOSE
from .crypto import Keyring, KeyringError, envelope_kid, open_envelope, seal, write_keyring

BATCH = 500


def rotate_keyring(path: Path, keyring: Keyring, kid: str | None = None) -> Keyring:
    rotated = keyring.with_new_key(kid or time.strftime("k%Y%m%d%H%M%S"))
    write_keyring(path, rotated)
    return rotated


async def rewrap(conn: asyncpg.Connection, keyring: Keyring, *, limit: int | None = None) -> int:
    """Re-seal envelopes not under the current key; returns how many (at most `limit`)."""
    done = 0
    after = 0
    while limit is None or done < limit:
        rows = await conn.fetch(
            "SELECT id, org_id, token_envelope FROM monitors WHERE id > $1 ORDER BY id LIMIT $2",
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
                if envelope_kid(row["token_envelope"]) == keyring.current:
                    continue
                if envelope_kid(row["token_envelope"]) not in keyring.keys:
                    raise KeyringError(f"monitor {row['id']}: its key is not in the keyring")
                plain = open_envelope(
                    keyring, row["token_envelope"], purpose=TOKEN_PURPOSE,
                    org_id=row["org_id"], object_id=row["id"],
                )  # fmt: skip
                fresh = seal(
                    keyring, plain, purpose=TOKEN_PURPOSE, org_id=row["org_id"], object_id=row["id"]
                )
                changed = await conn.execute(
                    "UPDATE monitors SET token_envelope = $1 WHERE id = $2 AND token_envelope = $3",
                    fresh,
                    row["id"],
                    row["token_envelope"],
                )
                done += changed == "UPDATE 1"
    return done
