"""Heartbeat tokens: 32 random bytes as 64 lowercase hex characters, kept only as digests.

The ingest looks a ping up by the BLAKE3 digest of the token's 64 ASCII characters; the
token itself is stored nowhere but in its encrypted envelope (control plane).
"""

from __future__ import annotations

import secrets

from blake3 import blake3

TOKEN_BYTES = 32
TOKEN_LENGTH = 2 * TOKEN_BYTES  # lowercase hex characters in a ping URL


def new_token() -> str:
    """A fresh heartbeat token from the OS CSPRNG."""
    return secrets.token_hex(TOKEN_BYTES)


def digest(token: str | bytes) -> bytes:
    """The 32-byte BLAKE3 digest the ingest looks tokens up by."""
    raw = token.encode("ascii") if isinstance(token, str) else token
    return blake3(raw).digest()
