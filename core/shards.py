"""Shards: a monitor's shard is a function of its token's digest (never of the token):
the first two bytes, big-endian, modulo SHARDS. Migration 0009 computes the same in
PostgreSQL (a generated column); ``tests/core/test_shards.py`` holds them equal."""

from __future__ import annotations

SHARDS = 1024


def shard_of(digest: bytes) -> int:
    if len(digest) != 32:
        raise ValueError("a digest is 32 bytes")
    return ((digest[0] << 8) | digest[1]) % SHARDS
