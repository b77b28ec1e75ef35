"""`lastseen bootstrap`: an organisation, a user in it, and a PAT for that user."""

from __future__ import annotations

import asyncpg

from . import pat
from .crypto import Keyring


class BootstrapError(Exception):
    pass


async def bootstrap(dsn: str, keyring: Keyring, org: str, email: str, role: str) -> str:
    """Create the organisation if new (its first user must be the owner) and the user,
    and return a new PAT with scope `*` (limited by the role)."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            org_row = await conn.fetchrow("SELECT id FROM orgs WHERE name = $1 FOR UPDATE", org)
            if org_row is None:
                if role != "owner":
                    raise BootstrapError("a new organisation's first user must be its owner")
                org_id = await conn.fetchval(
                    "INSERT INTO orgs (name) VALUES ($1) RETURNING id", org
                )
            else:
                org_id = org_row["id"]
            user_id = await conn.fetchval(
                "INSERT INTO users (org_id, email, role) VALUES ($1, $2, $3)"
                " ON CONFLICT (org_id, email) DO UPDATE SET role = EXCLUDED.role RETURNING id",
                org_id,
                email,
                role,
            )
            token = pat.new_token()
            await conn.execute(
                "INSERT INTO access_tokens (org_id, user_id, name, scopes, token_hash, token_hint)"
                " VALUES ($1, $2, 'bootstrap', ARRAY['*'], $3, $4)",
                org_id,
                user_id,
                pat.token_hash(keyring.pat_key, token),
                pat.hint(token),
            )
        return token
    finally:
        await conn.close()
