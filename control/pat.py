"""Personal access tokens: ``obs_`` + 32 random bytes in base62 + a CRC32 checksum.

The checksum lets a mistyped or truncated token be refused before any database query
(and lets secret scanners recognise ours). At rest a token is only its keyed hash
(HMAC-SHA256 under the keyring's ``pat_key``), looked up by equality; a database dump
yields no usable token. ``hint`` (the first eight characters) is what listings show.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib

PREFIX = "obs_"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BODY = 43  # 62**43 > 2**256
_CHECK = 6  # 62**6 > 2**32
LENGTH = len(PREFIX) + _BODY + _CHECK
_SHAPE = re.compile(rf"{PREFIX}[0-9A-Za-z]{{{_BODY + _CHECK}}}")


def _base62(value: int, width: int) -> str:
    digits = []
    while value:
        value, rem = divmod(value, 62)
        digits.append(_ALPHABET[rem])
    return "".join(reversed(digits)).rjust(width, "0")


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), _CHECK)


def new_token() -> str:
    """A fresh token from the OS CSPRNG."""
    body = _base62(int.from_bytes(secrets.token_bytes(32), "big"), _BODY)
    return PREFIX + body + _checksum(body)


def well_formed(token: str) -> bool:
    """Shape and checksum; no database needed."""
    if len(token) != LENGTH or _SHAPE.fullmatch(token) is None:
        return False
    body = token[len(PREFIX) : len(PREFIX) + _BODY]
    return hmac.compare_digest(token[-_CHECK:], _checksum(body))


def token_hash(pat_key: bytes, token: str) -> bytes:
    """What is stored and looked up: HMAC-SHA256(pat_key, token)."""
    return hmac.new(pat_key, token.encode("ascii"), hashlib.sha256).digest()


def hint(token: str) -> str:
    return token[:8]
